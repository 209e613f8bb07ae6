"""The benchmarks behind ``ragtune bench``: one module each, on top of the library they measure.

* ``retrieval`` (:mod:`.retrieval`): hybrid search on 100k memories against raw pgvector;
* ``ingest`` (:mod:`.ingest`): the write acknowledgement and ingest throughput;
* ``router`` (:mod:`.router`): the routing decision's overhead and routes end to end;
* ``swap`` (:mod:`.swap`): publishing an adapter version under load;
* ``lora_ops`` (:mod:`.lora_ops`): vLLM's CPU LoRA ops against the serving plugin's;
* ``canary_margin`` (:mod:`.canary_margin`): greedy leads served vs in process;
* ``parametric`` (:mod:`.parametric`): distill and tune one LoCoMo conversation, measured;
* ``load`` (:mod:`.load`): concurrent chat sessions against the memory graph;
* ``tenants`` (:mod:`.tenants`): many users on one server, adapters loaded on first use.

:mod:`.registry` names them for ``ragtune bench``; :mod:`.summary` writes the Markdown table.
Each result is JSON with the machine (:func:`langchain_ragtune.hardware.machine_info`) and
the date.
"""
