"""Regenerate docs/cli.md from docs/cli.md.in by running every ```run block's commands for real.

Each command runs in a scratch directory holding a copy of examples/forecast.py and a malformed
IR file, with the repository's .venv on PATH and a fresh compile cache; its combined output
replaces the block as a ```console transcript. Usage: .venv/bin/python tools/gen_cli_doc.py
"""
import os
import re
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    demo = tempfile.mkdtemp(prefix="graphad-cli-demo-")
    cache = "/tmp/gcache"  # the directory docs/cli.md says its transcripts use
    shutil.rmtree(cache, ignore_errors=True)
    os.makedirs(cache, mode=0o700)
    os.makedirs(os.path.join(demo, "examples"))
    shutil.copy(os.path.join(ROOT, "examples", "forecast.py"), os.path.join(demo, "examples", "forecast.py"))
    with open(os.path.join(demo, "broken.gir"), "w") as f:
        f.write('func @f(%x: f32[3]) -> (f32[3]) {\n  %0 = tanh(%x : f32[3]\n  return %0\n}\n')
    env = dict(os.environ, PATH=os.path.join(ROOT, ".venv", "bin") + ":" + os.environ["PATH"],
               GRAPHAD_CACHE_DIR=cache)

    def run(cmd):
        r = subprocess.run(cmd, shell=True, cwd=demo, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        out = f"$ {cmd}\n{r.stdout}"
        if r.returncode:
            out += f"$ echo $?\n{r.returncode}\n"
        return out.rstrip("\n")

    def repl(m):
        cmds = [c for c in m.group(1).strip("\n").split("\n") if c.strip()]
        return "```console\n" + "\n".join(run(c) for c in cmds) + "\n```"

    with open(os.path.join(ROOT, "docs", "cli.md.in")) as f:
        src = f.read()
    doc = re.sub(r"```run\n(.*?)```", repl, src, flags=re.S)
    with open(os.path.join(ROOT, "docs", "cli.md"), "w") as f:
        f.write(doc)
    shutil.rmtree(demo, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
