"""``kestrel push``: send a bundle (or a rollback) to a device or a group through the broker,
then follow the devices' retained ``<prefix>/model`` statuses until each one answered.

Exit status: 0 every device runs the new bundle (``--rollback``: rolled back); 1 a device
refused it or rolled back, or a group device is offline; 2 a bad bundle, key or broker
setting, or the broker refused the push; 3 no answer in ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

FINAL = ("active", "rejected", "rolled_back")


def add_parser(sub: Any) -> None:
    """The ``push`` subcommand (device/cli.py calls this)."""
    push = sub.add_parser(
        "push",
        help="send a model bundle to a device or a group over MQTT",
        description="Send a bundle through the broker; the device verifies it, tries it on "
        "its camera's latest frames and swaps it in between two frames.",
        epilog="exit status: 0 done, 1 refused / rolled back / a device offline, 2 bad "
        "input or broker, 3 timeout",
    )
    push.add_argument("bundle", nargs="?", type=Path, help="bundle folder (not with --rollback)")
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", help="device_id of the device")
    target.add_argument("--group", help="every device with this name in ota.groups")
    push.add_argument("--camera", help="only this camera's model (default: every camera)")
    push.add_argument("--rollback", action="store_true", help="go back to the previous bundle")
    push.add_argument("--sign", type=Path, metavar="KEY", help="Ed25519 private key (PEM)")
    push.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    push.add_argument("--chunk-kb", type=int, default=64, help="chunk size (default 64 KiB)")
    broker = push.add_argument_group("broker (as in the daemon's mqtt section)")
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--port", type=int, default=None, help="default 1883, 8883 with --tls")
    broker.add_argument("--username")
    broker.add_argument("--password-file", type=Path, help="its first line is the password")
    broker.add_argument("--tls", action="store_true", help="connect with TLS")
    broker.add_argument("--ca-file", type=Path, help="CA that signed the broker's certificate")
    broker.add_argument("--cert-file", type=Path, help="client certificate (PEM)")
    broker.add_argument("--key-file", type=Path, help="client key (PEM)")
    broker.add_argument("--topic-prefix", default="kestrel")
    push.set_defaults(func=cmd_push)


def _mqtt_config(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from device.config import ConfigError, MqttConfig, TlsConfig

    try:
        tls = TlsConfig(
            enabled=args.tls, ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file
        )
        return MqttConfig(
            host=args.host,
            port=args.port or (8883 if args.tls else 1883),
            username=args.username,
            password_file=args.password_file,
            tls=tls,
            topic_prefix=args.topic_prefix,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"push: {problems}") from None


def _messages(args: argparse.Namespace, request: str) -> tuple[list[bytes], str, str]:
    """(messages, archive sha256, bundle name); the bundle is checked here first."""
    import hashlib

    from device.inference.bundle import load_bundle
    from device.ota.archive import pack
    from device.ota.protocol import chunk_messages, rollback_message
    from device.ota.signing import load_private_key, sign

    if args.rollback:
        return [rollback_message(request, args.camera)], "", ""
    bundle = load_bundle(args.bundle)  # a BundleError: exit 2, before the broker is touched
    archive = pack(bundle.path)
    sha = hashlib.sha256(archive).hexdigest()
    signature = sign(sha, load_private_key(args.sign)) if args.sign else None
    messages = chunk_messages(
        archive,
        request=request,
        name=bundle.name,
        camera=args.camera,
        signature=signature,
        chunk_bytes=args.chunk_kb * 1024,
    )
    size = len(archive) / (1 << 20)
    print(f"kestrel: {bundle.name}: {size:.1f} MiB in {len(messages)} chunks, sha256 {sha}")
    return messages, sha, bundle.name


def _usage_problem(args: argparse.Namespace) -> str | None:
    if args.rollback and args.bundle is not None:
        return "push --rollback takes no bundle"
    if not args.rollback and args.bundle is None:
        return "push needs a BUNDLE folder (or --rollback)"
    if args.chunk_kb < 1:
        return f"--chunk-kb must be at least 1, got {args.chunk_kb}"
    return None


def cmd_push(args: argparse.Namespace) -> int:
    from device.ota.protocol import new_request
    from device.ota.session import PushError, PushSession
    from device.ota.signing import SigningError
    from device.publish.topics import Topics

    problem = _usage_problem(args)
    if problem:
        print(f"kestrel: {problem}", file=sys.stderr)
        return 2
    request = new_request()
    config = _mqtt_config(args)
    try:
        messages, sha, _ = _messages(args, request)
    except SigningError as exc:
        print(f"kestrel: --sign: {exc}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.timeout
    topics = Topics(config.topic_prefix, args.device or "+")
    topic = topics.group_model_command(args.group) if args.group else topics.model_command
    session = PushSession(config, f"kestrel-push-{request}")
    watcher = _Watcher(args, request, sha)
    session.on_status = watcher.seen
    try:
        session.connect(deadline)
        session.watch(args.device or "+", deadline)
        watcher.members(session)
        session.publish_all(topic, messages, deadline)
        print(f"kestrel: sent to {topic}; waiting for the device(s)", flush=True)
        session.wait_for(lambda: watcher.done(session), deadline)
        return watcher.verdict(session)
    except PushError as exc:
        print(f"kestrel: {exc}", file=sys.stderr)
        return 2
    finally:
        session.close()


class _Watcher:
    """Follows the statuses that answer this request, and says when and how it ended."""

    def __init__(self, args: argparse.Namespace, request: str, sha: str) -> None:
        self.args, self.request, self.sha = args, request, sha
        self.expected: set[str] = {args.device} if args.device else set()
        self.offline: set[str] = set()
        self.answers: dict[str, dict[str, Any]] = {}

    def members(self, session: Any) -> None:
        """For a group: the devices whose retained status lists it (offline ones are not
        waited for)."""
        if self.args.group is None:
            return
        for device, status in session.statuses.items():
            if self.args.group in (status.get("groups") or []):
                if session.available.get(device) == "offline":
                    self.offline.add(device)
                else:
                    self.expected.add(device)
        print(
            f"kestrel: group {self.args.group}: {len(self.expected)} device(s) online"
            + (f", offline: {', '.join(sorted(self.offline))}" if self.offline else "")
        )

    def seen(self, device: str, status: dict[str, Any]) -> None:
        if status.get("request") != self.request:
            return
        if self.args.group:
            self.expected.add(device)  # it answered: it is in the group
        previous = self.answers.get(device, {}).get("status")
        self.answers[device] = status
        if status.get("status") != previous:
            print(f"{device}: {_describe(status)}", flush=True)

    def done(self, session: Any) -> bool:
        final = {d for d, s in self.answers.items() if s.get("status") in FINAL}
        return bool(self.expected) and self.expected <= final

    def verdict(self, session: Any) -> int:
        wanted = "rolled_back" if self.args.rollback else "active"
        missing = sorted(
            d for d in self.expected if self.answers.get(d, {}).get("status") not in FINAL
        )
        failed = sorted(
            d
            for d, s in self.answers.items()
            if s.get("status") in FINAL
            and (s.get("status") != wanted or (self.sha and s.get("sha256") != self.sha))
        )
        for device in sorted(self.offline):
            print(f"kestrel: {device}: offline, not updated", file=sys.stderr)
        for device in missing:
            seen = session.available.get(device, "never seen on this broker")
            print(
                f"kestrel: {device}: no answer within {self.args.timeout:g} s ({seen})",
                file=sys.stderr,
            )
        if not self.expected:
            what = f"device of group {self.args.group}" if self.args.group else "device"
            print(
                f"kestrel: no {what} answered within {self.args.timeout:g} s (is ota.enabled "
                "set, and ota.groups?)",
                file=sys.stderr,
            )
            return 3
        done = len(self.expected) - len(missing) - len(failed)
        if self.args.group:
            print(
                f"kestrel: group {self.args.group}: {done} of "
                f"{len(self.expected) + len(self.offline)} device(s) {wanted}"
            )
        if failed:
            for device in failed:
                print(f"kestrel: {device}: {_describe(self.answers[device])}", file=sys.stderr)
            return 1
        if missing:
            return 3
        return 1 if self.offline else 0


def _describe(status: dict[str, Any]) -> str:
    state = status.get("status", "?")
    text = f"{state} {status.get('name', '')} ({str(status.get('sha256') or '')[:12]})"
    if status.get("reason"):
        text += f": {status['reason']}"
    return text
