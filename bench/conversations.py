"""The conversation suite of bench/real_model.py: users, their sessions, and what each turn states.

Each turn carries what a memory layer should make of it, as rules on memory texts (case-insensitive
regular expressions), so a run on any model is judged the same way:

- ``facts``: each pattern must match a memory stored by the end of the turn (a fact-bearing turn);
- ``replaces``: after a correction, no live memory may match it any more, but the correction's
  own note (one that matches the turn's ``facts``: "Moved to Amsterdam, not Rotterdam");
- ``needs``: a question whose answer needs a memory: the pattern must be in what was injected, and
  ``uses`` (a pattern) in the answer;
- ``kind`` ``smalltalk`` or ``question``: nothing should be stored from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Turn:
    text: str
    kind: str  # fact | preference | context | correction | smalltalk | question
    facts: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    uses: str | None = None


@dataclass(frozen=True)
class User:
    user_id: str
    sessions: list[list[Turn]] = field(default_factory=list)


SUITE = [
    User("maya", [
        [
            Turn("Hi! I'm Maya, a backend engineer at a logistics company in Rotterdam.", "fact",
                 facts=(r"backend engineer|engineer", r"logistics|rotterdam")),
            Turn("I mostly write Rust these days, I really prefer it over Go.", "preference", facts=(r"rust",)),
            Turn("We're migrating our routing service from a monolith to microservices this quarter.", "context",
                 facts=(r"microservice|monolith|routing",)),
            Turn("Thanks, that's helpful!", "smalltalk"),
        ],
        [
            Turn("Which language should I use for the new pricing service?", "question",
                 needs=(r"rust",), uses=r"rust"),
            Turn("By the way, I'm allergic to peanuts, so no team snacks with peanuts for me.", "fact",
                 facts=(r"peanut",)),
            Turn("lol ok", "smalltalk"),
            Turn("Actually I moved to Amsterdam last month, not Rotterdam anymore.", "correction",
                 facts=(r"amsterdam",), replaces=(r"rotterdam",)),
        ],
        [
            Turn("Any snacks I should avoid at the team offsite?", "question", needs=(r"peanut",), uses=r"peanut"),
            Turn("What's a good way to split the routing monolith?", "question",
                 needs=(r"microservice|monolith|routing",), uses=r"servic"),
            Turn("Where do I live now?", "question", needs=(r"amsterdam",), uses=r"amsterdam"),
            Turn("I switched from VS Code to Neovim, and I love it.", "preference", facts=(r"neovim",)),
            Turn("Good morning!", "smalltalk"),
            Turn("Which editor do I use?", "question", needs=(r"neovim",), uses=r"neovim"),
        ],
    ]),
    User("omar", [
        [
            Turn("I'm Omar, I teach high-school chemistry in Leeds.", "fact", facts=(r"chemistry|teach",)),
            Turn("I'm vegetarian, so keep recipe ideas meat-free please.", "preference", facts=(r"vegetarian",)),
            Turn("I'm training for the Leeds half marathon in April.", "context", facts=(r"marathon",)),
            Turn("How are you today?", "smalltalk"),
        ],
        [
            Turn("Can you suggest a dinner for after a long run?", "question",
                 needs=(r"vegetarian",), uses=r"vegetarian|tofu|lentil|bean|chickpea|meat-free|veg"),
            Turn("My daughter Lina just turned 7.", "fact", facts=(r"lina|daughter",)),
            Turn("What should I focus on in training this week?", "question",
                 needs=(r"marathon",), uses=r"marathon|run"),
            Turn("Correction: the race is in May, it got moved from April.", "correction",
                 facts=(r"may",), replaces=(r"april",)),
        ],
        [
            Turn("Ideas for a lab demo for my class?", "question", needs=(r"chemistry|teach",),
                 uses=r"chemi|reaction|lab"),
            Turn("When is my race?", "question", needs=(r"marathon",), uses=r"may"),
            Turn("Ok thanks, bye", "smalltalk"),
            Turn("I prefer short answers with bullet points.", "preference", facts=(r"short|bullet",)),
            Turn("How old is my daughter?", "question", needs=(r"lina|daughter",), uses=r"7|seven"),
        ],
    ]),
    User("priya", [
        [
            Turn("I'm Priya, a data scientist working at a hospital in Leeds.", "fact",
                 facts=(r"data scien", r"hospital")),
            Turn("I use Python and pandas every day, and I can't stand R.", "preference",
                 facts=(r"python|pandas",)),
            Turn("I'm building a readmission risk model for the cardiology ward.", "context",
                 facts=(r"readmission|risk model|cardiology",)),
            Turn("haha nice", "smalltalk"),
        ],
        [
            Turn("Where do I work?", "question", needs=(r"hospital",), uses=r"hospital"),
            Turn("Which library should I use to load the ward data?", "question",
                 needs=(r"python|pandas",), uses=r"pandas|python"),
            Turn("I now use Polars instead of pandas, it's much faster.", "correction",
                 facts=(r"polars",), replaces=(r"pandas",)),
            Turn("My manager is called Dr. Evans.", "fact", facts=(r"evans",)),
        ],
        [
            Turn("How should I evaluate my readmission model?", "question",
                 needs=(r"readmission|risk model|cardiology",), uses=r"auc|roc|recall|precision|calibrat"),
            Turn("Which dataframe library do I use?", "question", needs=(r"polars",), uses=r"polars"),
            Turn("Who is my manager?", "question", needs=(r"evans",), uses=r"evans"),
            Turn("I'm taking next week off to visit my parents in Chennai.", "context",
                 facts=(r"chennai|parents|week off",)),
            Turn("Cool, thanks!", "smalltalk"),
            Turn("What am I doing next week?", "question", needs=(r"chennai|parents|week off",),
                 uses=r"chennai|parents"),
        ],
    ]),
]

#: Text that is never a memory: placeholders, the instruction's own examples, echoes of the protocol.
PLACEHOLDERS = (
    r"^\W*$", r"^\.\.\.$", r"^(content|text|memory|fact|none|null|n/a|string)$", r"<[^>]*>", r"\[m[0-9a-f]{6}\]",
    r"\(said \d{4}-\d\d-\d\d\)", r"^prefers python$", r"fintech startup", r"migrating to microservices$",
)


def turns() -> int:
    return sum(len(session) for user in SUITE for session in user.sessions)
