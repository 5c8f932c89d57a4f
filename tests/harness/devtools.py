"""Headless Chromium driven over the DevTools protocol, to watch what a page does when it loads.

``--dump-dom`` shows the final DOM but not whether a script ran: an ``alert()`` leaves no
trace in it. Over the protocol we see every JavaScript dialog (``Page.javascriptDialogOpening``),
uncaught exception, console call and browser log entry while the page loads. Chromium
talks on file descriptors 3 (commands in) and 4 (replies out) with ``--remote-debugging-pipe``;
messages are JSON, each ended by a NUL byte.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TIMEOUT_S = 60


@dataclass
class PageLoad:
    """What happened while a page loaded: dialogs, errors and console lines, and its final state."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    scripts: int = 0
    text: str = ""


class Chromium:
    """One headless Chromium process; :meth:`load` opens a page in a fresh tab."""

    def __init__(self, browser: str, profile: Path):
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        args = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        # The browser wants the pipe on descriptors 3 and 4; bash moves them there (dash's
        # redirections take one-digit descriptors only). The script holds no data, only numbers.
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{commands_read} 4>&{replies_write}', "bash", *args],
            pass_fds=(commands_read, replies_write), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "HOME": str(profile)})
        os.close(commands_read)
        os.close(replies_write)
        self._messages: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._next_id = 0

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self._replies, "rb", buffering=0) as stream:
            while chunk := stream.read(65536):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for message in messages:
                    self._messages.put(json.loads(message))
        self._messages.put(None)

    def _next(self, deadline: float) -> dict:
        message = self._messages.get(timeout=max(0.0, deadline - time.monotonic()))
        if message is None:
            raise RuntimeError("Chromium closed the DevTools pipe")
        return message

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             on_event=None) -> dict:
        """Send one command and return its result; events that arrive meanwhile go to ``on_event``."""
        self._next_id += 1
        command = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self._commands, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            message = self._next(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if on_event is not None and "method" in message:
                on_event(message)

    def load(self, page: Path) -> PageLoad:
        """Open ``page`` in a new tab, answer any dialog, and report what happened until it loaded."""
        seen = PageLoad()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        loaded = threading.Event()

        def on_event(event: dict) -> None:
            method, params = event["method"], event.get("params", {})
            if method == "Page.javascriptDialogOpening":
                seen.dialogs.append(f"{params.get('type')}: {params.get('message')}")
                self._dismiss.append(session)
            elif method == "Runtime.exceptionThrown":
                seen.errors.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Runtime.consoleAPICalled":
                seen.console.append(f"{params.get('type')}: {params.get('args')}"[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                seen.errors.append(params["entry"].get("text", "")[:500])
            elif method == "Page.loadEventFired":
                loaded.set()

        self._dismiss: list[str] = []
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session, on_event=on_event)
        self.send("Page.navigate", {"url": page.as_uri()}, session=session, on_event=on_event)
        deadline = time.monotonic() + TIMEOUT_S
        while not loaded.is_set():
            while self._dismiss:
                self.send("Page.handleJavaScriptDialog", {"accept": True}, session=self._dismiss.pop(),
                          on_event=on_event)
            message = self._next(deadline)
            if message.get("sessionId") == session and "method" in message:
                on_event(message)
        state = self.send("Runtime.evaluate", {
            "expression": "[document.querySelectorAll('script').length, document.body.innerText]",
            "returnByValue": True}, session=session, on_event=on_event)["result"]["value"]
        seen.scripts, seen.text = state
        self.send("Target.closeTarget", {"targetId": target})
        return seen

    def close(self) -> None:
        """Ask the browser to quit, and kill it if it does not within 10 s."""
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError, queue.Empty):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
