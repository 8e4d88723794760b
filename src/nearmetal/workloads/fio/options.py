"""Which fio options a plan may pass through (``fio.options``): an allow-list of options that shape the I/O and
name no file, host, command or output; log files only as relative paths that stay in the trial's directory;
the reason for each well-known dangerous option that is refused. See SECURITY.md."""

from __future__ import annotations

import re
from pathlib import Path

from nearmetal.confine import path_problem

OPTION_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_SHELL = "fio runs its value as a shell command"
_FILES = "it names files or devices fio writes; nearmetal chooses where fio writes (fio.directory)"
_OWN = "it has a parameter of its own, which the size checks see"
_HOST = "it makes fio connect to, or listen for, another host"
_OUTPUT = "it redirects fio's output, which nearmetal reads"
# Options nearmetal passes through `options` only when they are here: they shape the I/O (pattern, rate,
# buffers, syncing, timing, reporting) and name no file, host, command or output. Anything else is refused
# (an allow-list: fio has ~400 options and its command line also takes --output, --client, --server...).
ALLOWED_OPTIONS: frozenset[str] = frozenset(
    [
        "allrandrepeat",
        "atomic",
        "blockalign",
        "ba",
        "blocksize_range",
        "bsrange",
        "blocksize_unaligned",
        "bs_unaligned",
        "bssplit",
        "buffer_compress_chunk",
        "buffer_compress_percentage",
        "buffer_pattern",
        "buffered",
        "clat_percentiles",
        "clocksource",
        "continue_on_error",
        "create_on_open",
        "create_only",
        "create_serialize",
        "dedupe_percentage",
        "disable_bw_measurement",
        "disable_clat",
        "disable_lat",
        "disable_slat",
        "do_verify",
        "end_fsync",
        "exitall",
        "exitall_on_error",
        "fadvise_hint",
        "fdatasync",
        "file_append",
        "file_service_type",
        "fixedbufs",
        "fsync",
        "fsync_on_close",
        "gtod_reduce",
        "hipri",
        "ignore_error",
        "invalidate",
        "iodepth_batch",
        "iodepth_batch_complete",
        "iodepth_batch_complete_max",
        "iodepth_batch_complete_min",
        "iodepth_batch_submit",
        "iodepth_low",
        "kb_base",
        "lat_percentiles",
        "latency_percentile",
        "latency_target",
        "latency_window",
        "lockfile",
        "log_avg_msec",
        "log_hist_coarseness",
        "log_hist_msec",
        "log_max_value",
        "log_offset",
        "loops",
        "max_latency",
        "new_group",
        "norandommap",
        "number_ios",
        "offset",
        "offset_align",
        "offset_increment",
        "overwrite",
        "percentage_random",
        "percentile_list",
        "pre_read",
        "random_distribution",
        "random_generator",
        "randrepeat",
        "randseed",
        "rate",
        "rate_cycle",
        "rate_ignore_thinktime",
        "rate_iops",
        "rate_iops_min",
        "rate_min",
        "rate_process",
        "refill_buffers",
        "registerfiles",
        "rwmixwrite",
        "rw_sequencer",
        "scramble_buffers",
        "significant_figures",
        "sqthread_poll",
        "ss",
        "ss_dur",
        "ss_ramp",
        "startdelay",
        "steadystate",
        "steadystate_duration",
        "steadystate_ramp_time",
        "stonewall",
        "sync",
        "thinktime",
        "thinktime_blocks",
        "thinktime_spin",
        "time_based",
        "trim_backlog",
        "trim_percentage",
        "uncached",
        "unified_rw_reporting",
        "unit_base",
        "unlink",
        "unlink_each_loop",
        "userspace_reap",
        "verify",
        "verify_backlog",
        "verify_fatal",
        "verify_interval",
        "verify_offset",
        "verify_pattern",
        "wait_for_previous",
        "write_barrier",
        "zero_buffers",
        "nice",
        "prio",
        "prioclass",
        "cpus_allowed",
        "cpus_allowed_policy",
        "cpumask",
    ]
)
# Options that name a file fio writes (a log's prefix) or reads: passed only as a relative path that stays in
# the trial's directory (plan.paths: checked at plan load, and again with links resolved when the trial runs).
CONFINED_OPTIONS: frozenset[str] = frozenset(
    {"write_bw_log", "write_lat_log", "write_iops_log", "write_hist_log", "write_iolog", "read_iolog"}
)
# Why some well-known options are refused (the error names the reason; any other option not allowed is refused
# as unknown). See SECURITY.md.
FORBIDDEN_OPTIONS: dict[str, str] = {
    "exec_prerun": _SHELL,
    "exec_postrun": _SHELL,
    "trigger": _SHELL,
    "trigger_cmd": _SHELL,
    "trigger_file": _SHELL,
    "trigger_timeout": _SHELL,
    "filename": _FILES,
    "directory": _FILES,
    "opendir": _FILES,
    "filename_format": _FILES,
    "unique_filename": _FILES,
    "replay_redirect": _FILES,
    "merge_blktrace_file": _FILES,
    "verify_dump": _FILES,
    "verify_state_save": _FILES,
    "verify_state_load": _FILES,
    "output": _OUTPUT,
    "output_format": _OUTPUT,
    "append_terse": _OUTPUT,
    "minimal": _OUTPUT,
    "client": _HOST,
    "server": _HOST,
    "daemonize": "fio would keep running after the trial",
    "hostname": _HOST,
    "port": _HOST,
    "mem": "a path after mmap/mmaphuge/mmapshared makes fio create that file",
    "iomem": "a path after mmap/mmaphuge/mmapshared makes fio create that file",
    "ioengine": "external:/path loads a shared object; " + _OWN,
    "cgroup": "fio would create cgroups on the host; use a nearmetal layer",
    "cgroup_weight": "fio would create cgroups on the host; use a nearmetal layer",
    "cgroup_nodelete": "fio would leave cgroups on the host",
    "ioscheduler": "fio would change the host's I/O scheduler for the device",
    "fill_device": "it fills the whole filesystem or device",
    "fill_fs": "it fills the whole filesystem or device",
    "size": _OWN,
    "filesize": _OWN,
    "io_size": _OWN,
    "io_limit": _OWN,
    "numjobs": _OWN,
    "nrfiles": "it multiplies the files fio writes past the size checks",
}
# characters that would end an option (in the recorded job file, a new line is a new option) or the argument
BAD_VALUE_CHARS = {"\n": "a line break", "\r": "a carriage return", "\0": "a NUL byte"}


def option_problem(key: str, value: object) -> str | None:
    """Why ``key: value`` cannot pass through to fio, or None."""
    if not OPTION_KEY_RE.match(key):
        return f"{key!r} is not a fio option name (lower case letters, digits, _)"
    if key in FORBIDDEN_OPTIONS:
        return f"fio option {key!r} is not allowed in a plan: {FORBIDDEN_OPTIONS[key]}"
    if key not in ALLOWED_OPTIONS and key not in CONFINED_OPTIONS:
        return (
            f"fio option {key!r} is not one nearmetal passes through: only options known to name no file, "
            "host, command or output are (nearmetal.workloads.fio.options.ALLOWED_OPTIONS; log files: "
            + ", ".join(sorted(CONFINED_OPTIONS))
            + ")"
        )
    text = str(value)
    for char, name in BAD_VALUE_CHARS.items():
        if char in text:
            return f"fio option {key!r}: the value contains {name}, which would start another option"
    if key in CONFINED_OPTIONS:
        if not text or Path(text).is_absolute():
            return (
                f"fio option {key!r} names a file fio writes: give a relative path, which stays in the "
                "trial's directory"
            )
        if path_problem(text, []):
            return f"fio option {key!r}: {text!r} climbs out of the trial's directory ('..')"
    return None
