"""The model endpoints the agents ask, as nodes of the network graph.

A model is not an agent of the hub (nothing sends it network messages): it is drawn from the
chat pipeline's ``ai.request.started`` and ``ai.request.completed`` events, one node per model
name, with an edge to each agent that asked it, its calls, failures and latency.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ...core.metrics.percentiles import p50_p95
from ...core.network import Node, NodeKind, NodeStatus
from ...core.network.remote_chat import is_remote_agent

PREFIX = "model:"
SAMPLES = 200
"""The latest calls a model's p50 and p95 are computed from."""


def node_id(model: str) -> str:
    return f"{PREFIX}{model}"


def is_model(node: str) -> bool:
    return node.startswith(PREFIX)


@dataclass
class Endpoint:
    """What the pane knows of one model."""

    node: Node
    provider: str | None = None
    agents: set[str] = field(default_factory=set)
    in_flight: set[str] = field(default_factory=set)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    first_token: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    speeds: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    cost_usd: float = 0.0
    last_error: str | None = None


class ModelEndpoints:
    """The models seen, kept current from the pipeline's events."""

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        """By node id."""
        self._calls: dict[str, tuple[str, str]] = {}
        """Each call in flight (by request id): its agent and model node."""

    def known(self, agent_id: str, model: str, provider: str | None) -> Endpoint:
        """A model an agent asked before the pane opened."""
        endpoint = self._endpoint(model, provider)
        endpoint.agents.add(agent_id)
        return endpoint

    def started(self, payload: dict[str, Any]) -> tuple[str, str, str] | None:
        """A call began: returns (request id, agent node, model node), or None when the call
        has no agent or no model to draw."""
        agent_id, model = payload.get("agent_id"), payload.get("model")
        request_id = str(payload.get("request_id") or "")
        # A chat answered by a remote agent is drawn as the network request it is, not a model.
        if not agent_id or not model or not request_id or is_remote_agent(model):
            return None
        endpoint = self._endpoint(model, None)
        endpoint.agents.add(agent_id)
        endpoint.in_flight.add(request_id)
        endpoint.node.status = NodeStatus.WORKING
        self._calls[request_id] = (agent_id, endpoint.node.id)
        return request_id, agent_id, endpoint.node.id

    def completed(self, payload: dict[str, Any]) -> tuple[str, str, str, str, bool] | None:
        """A call ended: returns (request id, agent node, the model node asked, the model
        node that answered, succeeded). When a fallback answered, the model asked counts a
        failure and the one that answered the call."""
        request_id = str(payload.get("request_id") or "")
        call = self._calls.pop(request_id, None)
        if call is None:
            return None
        agent_id, model_node = call
        asked = self.endpoints.get(model_node)
        if asked is None:
            return None
        asked.in_flight.discard(request_id)
        status = str(payload.get("status") or "")
        succeeded = status == "complete"
        answered_by = payload.get("model")
        if answered_by and node_id(answered_by) != model_node:
            asked.node.failed += 1
            asked.last_error = "fell back"
            self._settle(asked)
            endpoint = self._endpoint(answered_by, None)
            endpoint.agents.add(agent_id)
        else:
            endpoint = asked
        provider = payload.get("provider")
        if provider:
            endpoint.provider = provider
            endpoint.node.location = provider
        if succeeded:
            endpoint.node.handled += 1
            endpoint.last_error = None
            for samples, value in (
                (endpoint.latencies, payload.get("latency_ms")),
                (endpoint.first_token, payload.get("time_to_first_token_ms")),
                (endpoint.speeds, payload.get("tokens_per_second")),
            ):
                if isinstance(value, int | float):
                    samples.append(float(value))
        elif status in ("error", "queued"):
            endpoint.node.failed += 1
            endpoint.last_error = status
        cost = payload.get("cost_usd")
        if isinstance(cost, int | float):
            endpoint.cost_usd += float(cost)
        self._settle(endpoint)
        return request_id, agent_id, model_node, endpoint.node.id, succeeded

    @staticmethod
    def _settle(endpoint: Endpoint) -> None:
        if endpoint.in_flight:
            endpoint.node.status = NodeStatus.WORKING
        elif endpoint.last_error == "queued":
            endpoint.node.status = NodeStatus.OFFLINE
        elif endpoint.last_error:
            endpoint.node.status = NodeStatus.ERROR
        else:
            endpoint.node.status = NodeStatus.IDLE

    def latency(self, model_node: str) -> tuple[float | None, float | None]:
        """The p50 and p95 of its calls, in seconds."""
        endpoint = self.endpoints.get(model_node)
        p50, p95 = p50_p95(endpoint.latencies if endpoint is not None else ())
        if p50 is None or p95 is None:
            return None, None
        return p50 / 1000, p95 / 1000

    def median(self, samples: deque[float]) -> float | None:
        return statistics.median(samples) if samples else None

    def _endpoint(self, model: str, provider: str | None) -> Endpoint:
        key = node_id(model)
        endpoint = self.endpoints.get(key)
        if endpoint is None:
            endpoint = Endpoint(
                Node(
                    id=key,
                    name=model,
                    kind=NodeKind.MODEL,
                    skills=[],
                    location=provider or model.partition("/")[0] or "model",
                )
            )
            self.endpoints[key] = endpoint
        if provider and endpoint.provider is None:
            endpoint.provider = provider
            endpoint.node.location = provider
        return endpoint
