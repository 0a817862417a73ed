"""AI judges (constitutions, Anthropic / OpenAI-compatible / local backends) and programmatic
graders. Plain Python: no Streamlit here."""
