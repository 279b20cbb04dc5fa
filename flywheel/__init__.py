"""The model lifecycle's offline stages, in one place: export → train → (convert) → gate → register.

``stages.py`` lists the whole loop, each stage with what it reads, what it writes and the command
that runs it. The packages here sit above the server's domain packages (they reuse its engine,
agents and feedback store) and below ``cli/``; the server never imports them. What the stages hand
each other (dataset files, training record, manifest, registry) is defined in ``artifacts/``.
"""
