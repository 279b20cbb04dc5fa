"""Chat shaping: what turns OpenAI-style messages, tools and response formats into a prompt,
a grammar and parsed calls — above the engine, which knows only tokens.

- ``prompt``: the model's chat template over its tokenizer (``ChatPrompt``);
- ``template``: the sandboxed Jinja renderer of GGUF chat templates;
- ``json_grammar``: GBNF for ``json_object`` / ``json_schema`` response formats;
- ``tools``: tool specs, how tools reach the prompt, call grammars and the call parser.
"""
