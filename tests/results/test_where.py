"""`--where`: the small filter of `exp studies copy` and `exp trials drop`, on real FrozenTrials."""

from __future__ import annotations

import optuna
import pytest

from exptrack import records
from exptrack.errors import UserError
from exptrack.results import where


def trial(number: int, value: float, **config: object) -> optuna.trial.FrozenTrial:
    made = optuna.trial.create_trial(
        value=value,
        params={"lr": config.get("lr", 0.1)},
        distributions={"lr": optuna.distributions.FloatDistribution(1e-5, 1.0)},
        user_attrs={records.CONFIG_ATTR: {"epochs": 2, "loss": "focal", **config}},
    )
    made.number = number
    return made


def test_conditions_compare_numbers_as_numbers_and_words_as_words() -> None:
    trials = [trial(0, 0.5, epochs=1), trial(1, 0.9, lr=0.001), trial(2, 0.7, loss="cross_entropy")]
    chosen = lambda text: [t.number for t in trials if where.parse(text)(t)]  # noqa: E731
    assert chosen("epochs==2") == [1, 2]
    assert chosen("epochs == 2.0 and lr<0.01") == [1]
    assert chosen("loss=='cross_entropy'") == [2] == chosen("loss==cross_entropy")
    assert chosen("value>=0.7 and state==COMPLETE") == [1, 2]
    assert chosen("number!=1") == [0, 2]
    assert chosen("missing==1") == []  # a key a trial lacks never matches


@pytest.mark.parametrize(
    "text, says",
    [("epochs=2", "is not KEY OP VALUE"), ("loss<focal", "compares numbers"), ("", "1 to 16"),
     ("__import__('os').system('x')==1", "is not KEY OP VALUE")],
)  # fmt: skip
def test_a_bad_filter_is_one_line_naming_the_grammar(text: str, says: str) -> None:
    with pytest.raises(UserError, match=says):
        where.parse(text)
