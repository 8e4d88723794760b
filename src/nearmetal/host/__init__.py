"""Host mechanisms, one module each (BenchExec's layout): running a host program (``hostcmd``), cgroups,
mount tables (``mountinfo``), network namespaces and links (``hostnet``), user namespaces (``userns``), the
machine's description (``machine``), interrupts, run locks (``runlock``), what a killed run left
(``leftovers``) and removing it (``cleanup``), free ports, GPUs (``gpu``, ``gpu_profiles``) and root-safe file
access (``safefs``). Nothing here knows of plans, layers, workloads or statistics: they call in, never out."""
