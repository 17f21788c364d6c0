"""Merge an overlay YAML into an ESPnet training config (fine-tuning).

The overlay is applied on top of the base config: nested mappings are merged
key by key (``optim_conf: {lr: 0.0002}`` changes only the learning rate), any
other value (scalars, lists, ``null``) replaces the base's.  Entries of the
base that the fine-tuning command line gives again are dropped first
(``DEFAULT_DROP``): ESPnet appends command-line values of list options to the
config's, and would otherwise train on the data twice.
"""

from typing import Any, Dict


# Options asr_comflp.sh's fine-tuning stage passes to asr_train on the command
# line, options that describe the original run's devices and processes, and
# entries ESPnet records in config.yaml that its parser does not accept back.
DEFAULT_DROP = (
    "config",
    "print_config",
    "collect_stats",
    "write_collected_feats",
    "train_data_path_and_name_and_type",
    "valid_data_path_and_name_and_type",
    "train_shape_file",
    "valid_shape_file",
    "fold_length",
    "output_dir",
    "init_param",
    "resume",
    "ngpu",
    "dist_backend",
    "dist_init_method",
    "dist_world_size",
    "dist_rank",
    "local_rank",
    "dist_master_addr",
    "dist_master_port",
    "dist_launcher",
    "multiprocessing_distributed",
    "distributed",
    # Recorded by ESPnet in config.yaml but not options of its parser.
    "required",
    "version",
)


def merge(base: Dict[str, Any], overlay: Dict[str, Any]) -> Dict[str, Any]:
    """Recursive merge; the overlay wins, mappings are merged key by key."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
