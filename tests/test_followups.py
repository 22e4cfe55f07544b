"""Follow-up questions are searched together with the turn they lean on; standalone ones are not."""

from __future__ import annotations

import re

import pytest

from llmfti.on_demand import is_follow_up, retrieval_query
from tests.conftest import SQUAD_DEV


def chat(*user_messages: str) -> list[dict[str, str]]:
    messages = []
    for i, text in enumerate(user_messages):
        if i:
            messages.append({"role": "assistant", "content": "(an earlier answer)"})
        messages.append({"role": "user", "content": text})
    return messages


@pytest.mark.parametrize("text", ["and how do I undo that?", "What about its port?", "Which NFL team won it?",
                                  "why?", "Does it need a key?"])
def test_messages_that_lean_on_earlier_turns_are_follow_ups(text):
    assert is_follow_up(text)


@pytest.mark.parametrize("text", ["How do I roll back an index?", "Which embedding model indexes documents?",
                                  "What is the capital of France?"])
def test_standalone_questions_are_not(text):
    assert not is_follow_up(text)


def test_a_follow_up_is_searched_with_the_earlier_user_turns_only():
    messages = chat("How do I roll back an index?", "Which port does the agent use?", "and how do I undo that?")
    assert retrieval_query(messages, 1) == "Which port does the agent use? and how do I undo that?"
    assert retrieval_query(messages, 2) == ("How do I roll back an index? Which port does the agent use? "
                                            "and how do I undo that?")
    assert retrieval_query(messages, 0) == "and how do I undo that?"
    standalone = chat("How do I roll back an index?", "Which embedding model indexes documents?")
    assert retrieval_query(standalone, 2) == "Which embedding model indexes documents?"


@pytest.mark.skipif(not SQUAD_DEV.is_file(), reason="../shared/data/squad-v1.1-dev is not beside the repo")
def test_squad_follow_ups_name_the_article_only_in_the_history():
    from evals.datasets import _squad_followups, article_name

    rows = _squad_followups(SQUAD_DEV)
    assert len(rows) > 1000
    for row in rows[:: max(1, len(rows) // 50)]:
        name = re.compile(rf"\b{re.escape(article_name(row.reference_doc_ids[0].split('#')[0]))}\b", re.IGNORECASE)
        assert name.search(row.history[0]) and not name.search(row.question), row
        assert is_follow_up(row.question)
