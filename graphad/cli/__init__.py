"""The `graphad` command line (console script `graphad = graphad.cli.main:main`).

Subcommands: trace, opt, passes, lower, compile, run, cache; see docs/cli.md and
`graphad COMMAND --help`. `graphad.cli.main.main(argv, stdout=..., stderr=...)` runs a command
line in-process and returns its exit status. Modules: `main` (parser, commands, exit codes),
`specs` (--args, --transform, FILE:FUNC targets, tracing), `term` (streams and colours),
`api_doc` (generates docs/api.md, the API reference, from the code).
"""
