"""tandem's python tool driver: runs code as it arrives, one top-level statement (with its
block) as soon as the next top-level line shows it is complete. Reads JSON lines on stdin:
{"line": "..."} or {"end": true}. Writes the program's stdout and stderr (merged), then the
value of a final expression. Exit status 1 after an exception. Limits: argv[1] CPU seconds,
argv[2] bytes of address space; network and process creation are refused by an audit hook."""
import ast
import json
import resource
import sys
import traceback

cpu, mem = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
sys.stderr = sys.stdout

REFUSED = ("socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
           "socket.gethostbyname", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn",
           "os.spawn", "os.fork", "os.forkpty", "pty.spawn")


def audit(event, _args):
    if event.startswith(REFUSED):
        raise PermissionError(f"{event} is not allowed in the python tool")


sys.addaudithook(audit)
ENV = {"__name__": "__main__"}
CONTINUATION = ("else", "elif", "except", "finally", ")", "]", "}", "case")


def run(lines, final):
    tree = ast.parse("\n".join(lines), "<tool>")
    last = None
    if final and tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<tool>", "exec"), ENV)
    if last is not None:
        value = eval(compile(last, "<tool>", "eval"), ENV)
        if value is not None:
            print(repr(value))
    sys.stdout.flush()


def starts_statement(line):
    return line.strip() and not line[0].isspace() and not line.lstrip().startswith(CONTINUATION) \
        and not line.lstrip().startswith("#")


def parses(lines):
    try:
        ast.parse("\n".join(lines))
        return True
    except SyntaxError:
        return False


def main():
    pending = []
    for raw in sys.stdin:
        msg = json.loads(raw)
        if msg.get("end"):
            break
        line = msg["line"]
        if pending and starts_statement(line) and parses(pending):
            run(pending, final=False)
            pending = []
        pending.append(line)
    if pending:
        run(pending, final=True)


try:
    main()
except BaseException:  # noqa: BLE001 - the traceback is the tool's result
    traceback.print_exc(limit=-3)
    sys.stdout.flush()
    sys.exit(1)
