"""Drop-in adapters for agent frameworks, each an optional extra imported on its own.

* :mod:`convostore.integrations.axio`: an ``axio.context.ContextStore`` on any URL
  (``pip install convostore[axio]``, Python 3.12+);
* :mod:`convostore.integrations.agentstr`: registers :class:`~convostore.SQLAlchemyDatabase`
  as agentstr's ``BaseDatabase`` when agentstr is installed;
* :mod:`convostore.integrations.openai_agents`: the OpenAI Agents SDK's ``Session``
  (``pip install convostore[openai-agents]``);
* :mod:`convostore.integrations.langchain`: LangChain's ``BaseChatMessageHistory``
  (``pip install convostore[langchain]``);
* :mod:`convostore.integrations.langgraph`: LangGraph's checkpointer, a
  ``BaseCheckpointSaver`` (``pip install convostore[langgraph]``);
* :mod:`convostore.integrations.adk`: Google ADK's ``BaseSessionService``
  (``pip install convostore[adk]``);
* :mod:`convostore.integrations.pydantic_ai`: pydantic-ai ``ModelMessage`` histories
  (``pip install convostore[pydantic-ai]``).

Nothing here is imported by ``import convostore``: each module imports its framework, so
import only the one you use.
"""
