"""Agent frameworks against the server: the OpenAI Agents SDK runs a function tool through both of its model
classes (chat completions and responses), and LangChain's ``bind_tools`` gets ``tool_calls``, through the
Chat Completions and the Responses API. The model is the embedded SmolLM2 rendered by Qwen3's real chat
template (``templated_live``); a required call is enforced by the grammar, so even this small model's run
ends with a valid call."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Literal

import jsonschema
import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    RunResult,
    function_tool,
    set_tracing_disabled,
)
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.api.conftest import TOOL_CHAT
from tests.conftest import Live

pytestmark = pytest.mark.slow

CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


@pytest.fixture(autouse=True)
def no_tracing() -> Iterator[None]:
    """The Agents SDK would otherwise export its traces to OpenAI."""
    set_tracing_disabled(True)
    yield
    set_tracing_disabled(False)


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
def test_the_agents_sdk_runs_a_function_tool(templated_live: Live, api: str) -> None:
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city.

        Args:
            city: The city's name.
        """
        calls.append(city)
        return f"sunny in {city}"

    model_class = OpenAIChatCompletionsModel if api == "chat_completions" else OpenAIResponsesModel

    async def run() -> RunResult:
        async with openai.AsyncOpenAI(
            base_url=templated_live.base_url, api_key=templated_live.key, max_retries=0, timeout=120
        ) as client:
            agent = Agent(
                name="weather",
                instructions="Answer questions about the weather with the tool.",
                model=model_class(model=TOOL_CHAT, openai_client=client),
                model_settings=ModelSettings(
                    tool_choice="required", parallel_tool_calls=False, temperature=0, max_tokens=120
                ),
                tools=[get_weather],
                tool_use_behavior="stop_on_first_tool",
            )
            return await Runner.run(agent, "What is the weather in Paris?", max_turns=2)

    result = asyncio.run(run())
    assert len(calls) >= 1 and all(isinstance(city, str) and city for city in calls)
    assert result.final_output == f"sunny in {calls[0]}"


def langchain(live: Live, responses: bool) -> ChatOpenAI:
    return ChatOpenAI(
        model=TOOL_CHAT,
        base_url=live.base_url,
        api_key=SecretStr(live.key),
        temperature=0,
        max_completion_tokens=120,
        max_retries=0,
        timeout=120,
        use_responses_api=responses,
    )


@tool
def get_time(timezone: str) -> str:
    """The time in a timezone."""
    return "noon"


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return "sunny"


@pytest.mark.parametrize("responses", [False, True], ids=["chat_completions", "responses"])
@pytest.mark.parametrize("choice", ["required", "get_weather"])
def test_langchain_bind_tools_gets_tool_calls(
    templated_live: Live, responses: bool, choice: Literal["required"] | str
) -> None:
    model = langchain(templated_live, responses).bind_tools([get_time, get_weather], tool_choice=choice)
    reply = model.invoke("What is the weather in Paris?")
    assert isinstance(reply, AIMessage)
    assert reply.tool_calls, reply
    names = {call["name"] for call in reply.tool_calls}
    assert names <= {"get_time", "get_weather"}
    if choice == "get_weather":
        assert names == {"get_weather"}
    for call in reply.tool_calls:
        assert call["id"]
        schema: dict[str, Any] = {
            "get_weather": CITY_SCHEMA,
            "get_time": {
                "type": "object",
                "properties": {"timezone": {"type": "string"}},
                "required": ["timezone"],
            },
        }[call["name"]]
        jsonschema.validate(call["args"], schema)
