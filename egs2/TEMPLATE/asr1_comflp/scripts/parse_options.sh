#!/usr/bin/env bash
# Command-line option parser for recipe scripts, with the user-facing behaviour of Kaldi's
# utils/parse_options.sh.  Source it after declaring every option as a shell variable with its
# default value (and, optionally, a $help_message):
#
#     nj=4
#     use_gpu=false
#     . scripts/parse_options.sh
#
# Accepted forms:
#   --name value      sets the shell variable "name" (dashes in the name become underscores)
#   --name=value      the same, in one argument
#   --config FILE     sources FILE (lines like "nj=8") before any command-line option is applied,
#                     so the command line wins; several --config options are applied left to right
#   --help, -h        prints $help_message and exits with status 0
# Parsing stops at the first argument that does not start with "--" (or at "--", which is
# removed); the remaining positional arguments are left in "$@" for the calling script.
# An undeclared option, an option without a value, or a non-boolean value for a variable whose
# default is true/false is an error (exit status 1).

_po_fail() {
    echo "${0##*/}: $*" >&2
    echo "${0##*/}: run '$0 --help' to list the options" >&2
    exit 1
}

# Normalises one option argument into _po_name/_po_value/_po_shift.
_po_split() {
    local arg=$1
    _po_shift=2
    if [[ "${arg}" == --*=* ]]; then
        _po_name=${arg%%=*}
        _po_value=${arg#*=}
        _po_shift=1
    else
        _po_name=${arg}
        if [ "$2" = "__po_missing__" ]; then
            _po_fail "option ${arg} needs a value"
        fi
        _po_value=$2
    fi
    _po_name=${_po_name#--}
    _po_name=${_po_name//-/_}
    if ! [[ "${_po_name}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
        _po_fail "invalid option name '${arg}'"
    fi
}

# Pass 1: config files have the lowest priority, so they are applied first.
_po_args=("$@" "__po_missing__")
_po_i=0
while [ "${_po_i}" -lt "$#" ]; do
    _po_arg=${_po_args[${_po_i}]}
    case "${_po_arg}" in
        --) break ;;
        --config|--config=*)
            _po_split "${_po_arg}" "${_po_args[$((_po_i + 1))]}"
            if [ ! -r "${_po_value}" ]; then
                _po_fail "cannot read config file '${_po_value}' (given by --config)"
            fi
            # shellcheck disable=SC1090
            . "${_po_value}"
            _po_i=$((_po_i + _po_shift))
            ;;
        --*=*) _po_i=$((_po_i + 1)) ;;
        --help|-h) _po_i=$((_po_i + 1)) ;;
        --*) _po_i=$((_po_i + 2)) ;;
        *) break ;;
    esac
done

# Pass 2: command-line options.
while [ "$#" -gt 0 ]; do
    case "$1" in
        --help|-h)
            if [ -n "${help_message:-}" ]; then
                printf '%s\n' "${help_message}" >&2
            else
                echo "${0##*/}: no help message available" >&2
            fi
            exit 0
            ;;
        --)
            shift
            break
            ;;
        --*)
            if [ "$#" -ge 2 ]; then
                _po_split "$1" "$2"
            else
                _po_split "$1" "__po_missing__"
            fi
            if [ "${_po_name}" != config ]; then
                if [ -z "${!_po_name+set}" ]; then
                    _po_fail "invalid option --${_po_name}"
                fi
                _po_old=${!_po_name}
                if { [ "${_po_old}" = true ] || [ "${_po_old}" = false ]; } \
                    && [ "${_po_value}" != true ] && [ "${_po_value}" != false ]; then
                    _po_fail "expected \"true\" or \"false\": --${_po_name} ${_po_value}"
                fi
                printf -v "${_po_name}" '%s' "${_po_value}"
            fi
            shift "${_po_shift}"
            ;;
        *) break ;;
    esac
done

unset _po_args _po_i _po_arg _po_name _po_value _po_shift _po_old
unset -f _po_split _po_fail
true
