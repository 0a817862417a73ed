"""Existing data in: preference datasets as labels with source `imported`, instruction and chat
datasets as prompts.

| format          | columns                                   | becomes                                        |
| --------------- | ----------------------------------------- | ---------------------------------------------- |
| `trl`           | prompt?, chosen, rejected                 | a pair in a pairwise project + one label       |
| `hh-rlhf`       | chosen, rejected (Human:/Assistant: text)  | a pair in a pairwise project + one label       |
| `ultrafeedback` | instruction, completions (with ratings)   | a rating item of K responses + one label       |
| `sharegpt`      | conversations (from/value)                | a prompt (the last answer: its reference)      |
| `alpaca`        | instruction, input?, output?              | a prompt (the output: its reference)           |
| `mt-bench`      | question_id, category, turns, reference?  | a prompt from the first turn, tagged category  |
| `prompts`       | prompt or messages, reference? ...        | a prompt, exactly as `prompts import` does     |

The modules: `formats` (each format's columns and detection), `pairs` (TRL and HH-RLHF rows),
`ratings` (UltraFeedback rows), `prompt_formats` (ShareGPT, Alpaca, MT-bench, this app's own
prompt rows), `store` (responses under external policy versions, items and labels) and
`importer` (`import_file`: reading, the all-or-nothing rule, the report). Only the names live
here, so the command line can list them without loading the database layer.
"""
from __future__ import annotations

FORMAT_NAMES = ("trl", "hh-rlhf", "ultrafeedback", "sharegpt", "alpaca", "mt-bench", "prompts")
