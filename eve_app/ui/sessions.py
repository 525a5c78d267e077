"""Memory per Gradio session: what Gradio keeps for each visitor, and how much of it this app lets it keep.

Every call with a new session hash (each gradio_client call, each `/call/...` request, each page) makes Gradio
create a `SessionState`, kept until `state_session_capacity` newer sessions push it out. Gradio builds in it, at once,
a copy of the configuration of every component of the page (`config_values`: props, API info, examples), which it
reads only to answer `/gradio_api/deep_link` (a link that restores a page as the visitor left it). For this app's
120 components that was about 214 KB per session, whatever the call did: 2,000 anonymous calls held 438 MB, and
Gradio's default 10,000 sessions about 2.2 GB.

`LeanSessionState` starts that copy empty; Gradio's own updates then fill in only the components an event read or
changed (`_update_value_in_config` builds a missing entry), so a deep link still restores what the visitor changed,
and the rest of the page comes from its defaults as for a fresh visitor. What remains per session is the table of
the page's blocks and the `gr.State` values (a few KB, measured by tests/e2e/test_public_safety.py).

Building such an entry (`config_for_block`: the component's whole configuration, its constructor's signature read
each time) cost about 0.15 ms a component, five for each `/answer` call in a new session: it is built once per
component and copied (docs/benchmarks.md, many visitors, third pass).
"""

import logging
import os
from copy import copy
from typing import Any

from gradio import state_holder
from gradio.state_holder import SessionState

logger = logging.getLogger("eve_app")


class LeanSessionState(SessionState):
    """Gradio's `SessionState` without the up-front copy of every component's configuration (see the module)."""

    def __init__(self, blocks: Any):  # the same fields as SessionState.__init__, one of them left empty
        self.blocks_config = copy(blocks.default_config)
        self.config_values: dict[int, dict] = {}
        self.state_data: dict[int, Any] = {}
        self._state_ttl: dict[int, Any] = {}
        self.is_closed = False
        self.STATE_TTL_WHEN_CLOSED = 1 if os.getenv("GRADIO_IS_E2E_TEST", None) else 3600

    def _update_value_in_config(self, key: int, value: Any) -> None:
        """Gradio's, with the missing entry copied from the component's configuration built once (`default_entry`)."""
        if key not in self.config_values:
            self.config_values[key] = default_entry(self.blocks_config, key, self.blocks_config.blocks[key])
        if "props" in self.config_values[key]:
            self.config_values[key]["props"]["value"] = value


_ENTRIES: dict[int, tuple[Any, dict]] = {}  # block id -> (the block, its configuration as Gradio builds it)


def default_entry(blocks_config: Any, key: int, block: Any) -> dict:
    """What `config_for_block` returns for a session that has not changed `block`: built once per block, handed out
    as a copy whose `props` (where Gradio writes the session's value) is its own."""
    cached = _ENTRIES.get(key)
    if cached is None or cached[0] is not block:  # another app in this process may use the same id
        cached = _ENTRIES[key] = (block, blocks_config.config_for_block(key, [], block))
    entry = dict(cached[1])
    if "props" in entry:
        entry["props"] = dict(entry["props"])
    return entry


def lean_sessions(blocks: Any) -> bool:
    """Make Gradio's session table create `LeanSessionState`s for every app of this process.

    Checked against the installed Gradio first: if its `SessionState` gained fields this class does not set, nothing
    is changed (a warning says so) rather than risk sessions that miss them. Returns whether it was installed.
    """
    expected, lean = set(vars(SessionState(blocks))), set(vars(LeanSessionState(blocks)))
    if expected != lean:
        logger.warning("Gradio's SessionState changed (%s); sessions keep Gradio's full copy.", expected ^ lean)
        return False
    state_holder.SessionState = LeanSessionState  # type: ignore[misc]  # what StateHolder.__getitem__ creates
    return True
