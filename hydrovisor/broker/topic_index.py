"""Subscription filters indexed by level: which filters match a topic name, in O(topic levels).

amqtt keeps subscriptions as ``{filter: [(session, qos), ...]}`` and walks every filter for every
message; with a fleet that is thousands of string matches per publish. :class:`SubscriptionTable`
is that same dict (amqtt keeps using it as before) plus a trie of its keys, kept in step with
every key amqtt adds or removes, so a broadcast or a subscriber count only visits matching filters.
"""

from __future__ import annotations

from amqtt.session import Session

Subscribers = list[tuple[Session, int]]


class _Level:
    __slots__ = ("children", "topic_filter")

    def __init__(self) -> None:
        self.children: dict[str, _Level] = {}
        self.topic_filter: str | None = None  # the filter that ends at this level, if any


class FilterIndex:
    """A set of MQTT topic filters; :meth:`matching` gives those matching a topic name (§4.7)."""

    def __init__(self) -> None:
        self._root = _Level()

    def add(self, topic_filter: str) -> None:
        """Index ``topic_filter`` (a filter amqtt accepted: wildcards only as whole levels)."""
        node = self._root
        for level in topic_filter.split("/"):
            node = node.children.setdefault(level, _Level())
        node.topic_filter = topic_filter

    def discard(self, topic_filter: str) -> None:
        """Forget ``topic_filter`` (no-op when absent) and prune the levels nothing else uses."""
        path = [self._root]
        levels = topic_filter.split("/")
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        path[-1].topic_filter = None
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.children or node.topic_filter is not None:
                break
            del path[depth - 1].children[levels[depth - 1]]

    def matching(self, topic: str) -> list[str]:
        """The indexed filters matching the topic name ``topic``, each once.

        Same rules as amqtt's ``Broker._matches``: ``+`` is one level, ``#`` the rest (zero levels
        included: ``a/#`` matches ``a``), and a ``$`` topic never matches a filter starting with a wildcard.
        """
        levels = topic.split("/")
        wild_root = not topic.startswith("$")
        found: list[str] = []
        stack = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            wild = wild_root or depth > 0
            rest = node.children.get("#")
            if rest is not None and wild and rest.topic_filter is not None:
                found.append(rest.topic_filter)
            if depth == len(levels):
                if node.topic_filter is not None:
                    found.append(node.topic_filter)
                continue
            level = levels[depth]
            if level not in ("+", "#"):  # a wildcard in a topic *name* only ever matches as a wildcard filter does
                exact = node.children.get(level)
                if exact is not None:
                    stack.append((exact, depth + 1))
            one = node.children.get("+")
            if one is not None and wild:
                stack.append((one, depth + 1))
        return found


class SubscriptionTable(dict[str, Subscribers]):
    """amqtt's ``Broker._subscriptions`` with a :class:`FilterIndex` of its keys.

    amqtt 0.12 adds and removes filters only with ``table[f] = []``, ``del table[f]`` and
    ``clear()``, which keep the index in step (``tests/broker`` pins the index against the keys
    through subscribe, unsubscribe, disconnect and client-id takeover).
    """

    def __init__(self) -> None:
        super().__init__()
        self.index = FilterIndex()

    def __setitem__(self, topic_filter: str, subscribers: Subscribers) -> None:
        if topic_filter not in self:
            self.index.add(topic_filter)
        super().__setitem__(topic_filter, subscribers)

    def __delitem__(self, topic_filter: str) -> None:
        super().__delitem__(topic_filter)
        self.index.discard(topic_filter)

    def clear(self) -> None:
        """``dict.clear``, indexed."""
        super().clear()
        self.index = FilterIndex()

    def subscribers(self, topic: str) -> list[Subscribers]:
        """The subscriber lists of every filter matching the topic name ``topic``."""
        return [self[topic_filter] for topic_filter in self.index.matching(topic)]
