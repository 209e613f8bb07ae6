"""A chatbot with long-term memory: the ready graph, and the route behind every answer.

    python examples/standalone_chat.py                # needs vLLM: `ragtune serve` first
    python examples/standalone_chat.py --local        # in-process model, no vLLM
"""

import sys

from langgraph.checkpoint.memory import InMemorySaver

from langchain_ragtune import MemoryStore, RouterConfig, create_memory_graph

local = "--local" in sys.argv

with MemoryStore.from_env() as store:
    store.setup()
    factory = None
    if local:  # answer with transformers in this process instead of vLLM
        from langchain_ragtune.serving.chat import InProcessChatModel

        model = InProcessChatModel(max_tokens=96)
        factory = lambda adapter: model  # noqa: E731 - the base model for every route
    graph = create_memory_graph(store, chat_model_factory=factory,
                                config=RouterConfig.from_env(local_fallback=True),
                                checkpointer=InMemorySaver())
    config = {"configurable": {"user_id": "demo-chat", "thread_id": "1"}}
    for text in ["Hi there!", "I just got back from a week of hiking in the Dolomites.",
                 "Where did I go hiking?", "What is the capital of Italy?"]:
        out = graph.invoke({"messages": [("user", text)]}, config)
        print(f"you: {text}\n  [{out['memory_route']}: {out['memory_decision']['reasons'][0]}]")
        print(f"ai:  {out['messages'][-1].content}\n")
    graph.remember_node.stop()
