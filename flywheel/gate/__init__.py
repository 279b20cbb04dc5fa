"""The eval gate: answer suites with a candidate and a baseline GGUF and compare them.

    suite.py     the questions and the text a passing answer contains
    runner.py    answer every item with one GGUF through the serving engine (and the RAG agent)
    room.py      how close a passing answer came to failing
    report.py    candidate vs baseline, one row per measure: passed or regressed

Not to be confused with the converter's *quality gate* (``convert/quality.py``), which compares
each GGUF with the merged Hugging Face model it was converted from.
"""
