"""Child side of the `python:` grader (judges/graders.py starts it; never import it).

Reads one JSON request on stdin: {"source", "path", "answer", "reference"}; runs the source and
calls its grade(answer, reference); writes one JSON reply line on stdout: {"score": float}, or
{"error": "..."} (plus "memory": true when it ran out of memory). The parent checks the score's
range and enforces time and memory limits; this side only reports what happened.

Standard library only, and no project imports: it runs with `python -I` in an environment
holding nothing but PATH and LANG.
"""
import json
import numbers
import os
import sys
import traceback


def _grade(request: dict) -> float:
    path = request["path"]
    # Helpers next to the grader file can be imported, as if it were run from its folder.
    sys.path.insert(0, os.path.dirname(path))
    namespace = {"__name__": "grader", "__file__": path}
    exec(compile(request["source"], path, "exec"), namespace)  # noqa: S102 - running it is the point
    grade = namespace.get("grade")
    if not callable(grade):
        raise TypeError("grade is not a function")
    result = grade(request["answer"], request["reference"])
    # bool is a number to Python; True/False as 1/0 is what anyone returning one means.
    if not isinstance(result, numbers.Real):
        raise TypeError(f"grade() returned {type(result).__name__} {result!r:.80}, not a number")
    return float(result)


def _error_text(exc: BaseException) -> str:
    # The last lines of the traceback: where in the grader it failed, and why.
    lines = "".join(traceback.format_exception(exc)).strip().splitlines()
    return "\n".join(lines[-6:])


def main() -> int:
    # Keep the real stdout for the reply; anything the grader prints (from Python or C) goes to
    # stderr, so it cannot corrupt the reply.
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        reply = {"score": _grade(json.load(sys.stdin))}
    except MemoryError:
        reply = {"error": "ran out of memory", "memory": True}
    except BaseException as exc:  # noqa: BLE001 - SystemExit etc. from grader code are failures too
        reply = {"error": _error_text(exc)}
    with os.fdopen(reply_fd, "w", encoding="ascii") as out:
        out.write(json.dumps(reply) + "\n")  # ensure_ascii: readable whatever the locale
    return 0


if __name__ == "__main__":
    sys.exit(main())
