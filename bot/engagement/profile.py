"""What a patron chose to tell about themselves (patron type, interests), found in what they wrote."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from bot.crm.consent import record_consent
from bot.crm.models import PATRON_TYPES, Patron

# The version of the profile question's wording, kept with the profiling consent it records.
PROFILE_WORDING = "profile-v1"
INTERESTS = ("e_resources", "new_books", "events", "research_help")

# Words that name each patron type, checked in this order ("staff" only after "faculty").
_TYPE_WORDS: dict[str, list[str]] = {
    "postgraduate": ["post-?grad", "graduate student", "grad student", "master'?s", "ph\\.?d",
                     "doctor(al|ate)", "研究生", "硕士", "博士", "研[一二三]"],
    "undergraduate": ["under-?grad", "bachelor", "freshman", "sophomore", "first-year", "exchange student",
                      "本科", "大[一二三四]", "交换生", "新生"],
    "faculty": ["faculty", "professor", "lecturer", "\\bi teach", "teacher", "教师", "老师", "教授", "讲师",
                "任教", "教职"],
    "staff": ["\\bstaff\\b", "employee", "i work (here|at)", "职工", "员工"],
    "public": ["public", "visitor", "alumn", "not a student", "校外", "社会读者", "访客", "校友"],
}  # fmt: skip
_INTEREST_WORDS: dict[str, list[str]] = {
    "e_resources": ["database", "e-?resource", "e-?book", "journal", "数据库", "电子资源", "电子书", "期刊"],
    "new_books": ["new (books|arrivals|titles)", "新书"],
    "events": ["event", "workshop", "lecture", "talk", "exhibition", "讲座", "培训", "活动", "展览"],
    "research_help": ["research", "citation", "subject librarian", "科研", "学科服务", "论文", "引用"],
}  # fmt: skip


def _patterns(words: dict[str, list[str]]) -> dict[str, re.Pattern[str]]:
    return {name: re.compile("|".join(alternatives), re.IGNORECASE) for name, alternatives in words.items()}


_TYPES = _patterns(_TYPE_WORDS)
_INTERESTS = _patterns(_INTEREST_WORDS)


def mentioned_patron_type(text: str) -> str | None:
    """The patron type a message names ("as a postgraduate", "我是研究生"), or None."""
    for patron_type, pattern in _TYPES.items():
        if pattern.search(text):
            return patron_type
    return None


# Someone else's type named ("on behalf of my professor", "帮我们老师问", "替导师"): not the patron's own.
_SOMEONE_ELSE = re.compile(
    r"\b(?:on behalf of|for (?:my|our|a)|my|our|his|her|their)\b\s+(?:\w+\s+)?"
    r"(?:professor|teacher|lecturer|supervisor|advisor|adviser|tutor|boss|colleague|friend|student|son|"
    r"daughter|child|kid|faculty|staff|postgrad|undergrad)"
    r"|(?:帮|替|代|给)(?:我们|我的|我)?的?(?:老师|导师|教授|同学|朋友|孩子|学生|别人)"
    r"|(?:我们|我的)的?(?:老师|导师|教授|同学|朋友|孩子|学生)",
    re.IGNORECASE,
)
# The patron speaking of themselves: "I'm a", "as a", "我是", "本人是", "作为".
_SELF = re.compile(
    r"\b(?:i'?m|i am|as an?|i study|i teach|i work)\b|我是|本人是|作为|我在读|我读|我在.{0,10}(?:上班|工作)",
    re.IGNORECASE,
)


def described_patron_type(text: str, *, asked: bool) -> str | None:
    """The patron's own type, when they tell it: "I'm a postgraduate", "我是研究生", or, answering the
    bot's question about it, a type alone ("研究生"); never a type they ask about for someone else ("I'm
    asking on behalf of my professor", "我帮我们老师问一下")."""
    if _SOMEONE_ELSE.search(text):
        return None
    if not asked and not _SELF.search(text):
        return None
    return mentioned_patron_type(text)


def mentioned_interests(text: str) -> list[str]:
    """The interests a message names, in INTERESTS order."""
    return [interest for interest, pattern in _INTERESTS.items() if pattern.search(text)]


def save_profile(
    *,
    session: Session,
    patron_id: int,
    channel: str,
    patron_type: str | None = None,
    interests: list[str] | None = None,
) -> Patron:
    """Keep what the patron told, and record that they consented to the library using it (profiling)."""
    if patron_type is not None and patron_type not in PATRON_TYPES:
        raise ValueError(f"unknown patron type {patron_type!r}")
    unknown = [interest for interest in interests or [] if interest not in INTERESTS]
    if unknown:
        raise ValueError(f"unknown interests {unknown}")
    patron = session.get(Patron, patron_id)
    if patron is None:
        raise LookupError(f"no patron {patron_id}")
    record_consent(
        session=session,
        patron_id=patron_id,
        purpose="profiling",
        granted=True,
        channel=channel,
        wording_version=PROFILE_WORDING,
    )
    if patron_type is not None:
        patron.patron_type = patron_type
    if interests:
        current = [str(i) for i in patron.interests] if isinstance(patron.interests, list) else []
        patron.interests = current + [i for i in interests if i not in current]
    session.flush()
    return patron
