"""Add long-term memory to an existing LangGraph agent: one node before it, one after.

Your agent keeps its own model and tools; the memory node decides, per message, which
memory is needed and puts it in state, and the remember node stores the turns.

    python examples/add_memory_to_agent.py            # needs vLLM: `ragtune serve` first
    RAGTUNE_VLLM_URLS=http://127.0.0.1:8765 python examples/add_memory_to_agent.py
"""

from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph

from langchain_ragtune import MemoryState, MemoryStore, create_memory_node, create_remember_node
from langchain_ragtune.router.nodes import memory_system_message
from langchain_ragtune.serving.chat import create_chat_model

llm = create_chat_model(max_tokens=96)  # your agent's model (here: the served base model)


def agent(state: MemoryState) -> dict:
    """The existing agent node, now with the memory the router chose as its system prompt."""
    reply = llm.invoke([memory_system_message(state), *state["messages"]])
    return {"messages": [reply]}


class State(MemoryState):  # memory_route, memory_context, ... next to your own keys
    pass


with MemoryStore.from_env() as store:
    store.setup()
    store.add(("user-42",), ["I adopted a beagle called Biscuit in March."])

    builder = StateGraph(State)
    builder.add_node("memory", create_memory_node(store))
    builder.add_node("agent", agent)
    builder.add_node("remember", remember := create_remember_node(store))
    builder.add_edge(START, "memory")
    builder.add_edge("memory", "agent")
    builder.add_edge("agent", "remember")
    builder.add_edge("remember", END)
    graph = builder.compile()

    # The namespace comes from the run's configuration, never from the conversation.
    config = {"configurable": {"user_id": "42", "thread_id": "example"}}
    out = graph.invoke({"messages": [HumanMessage("What is my dog called?")]}, config)
    print(f"[{out['memory_route']}] {out['memory_decision']['reasons'][0]}")
    print(out["messages"][-1].content)
    remember.stop()  # flush the background writes before the store closes
