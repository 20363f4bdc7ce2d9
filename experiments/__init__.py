"""The project's experiments and benchmarks, run from the repository root as modules:

    python -m experiments.bench_search --quick --out /tmp/b.json
    python -m experiments.nb201_evidence --help

Scripts: the benchmarks ``bench_sampler`` and ``bench_search`` and the studies ``nb201_evidence``
and ``nb201_cpu_search`` (each prints its table last and writes JSON under
``experiments/results/``); ``build_benchmark_table`` (the packaged NAS-Bench-201 table),
``synthetic_proxy_check`` and ``module_map``. What they share, by concern:

* :mod:`experiments.settings`: paths and the budgets of the studies' searches and retrains;
* :mod:`experiments.machine`: the machine, the code and the command behind a figure;
* :mod:`experiments.runs`: cached in-process searches and retrains (:class:`~experiments.runs.Runner`);
* :mod:`experiments.cifar_subset`: the fixed CIFAR-10 subset;
* :mod:`experiments.study`: a study's command line, run context and JSON record;
* :mod:`experiments.stats`, :mod:`experiments.tables`: statistics; tables, logs and plots.

They use the library's public API only. Finished studies are kept as records in
``experiments/frozen/`` (see its README): they ran at the commits named there and are not
maintained against the current API.
"""
