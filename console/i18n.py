"""The console's words in Chinese and English; each staff member's choice is remembered."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

LANGUAGES = ("zh", "en")

TEXT: dict[str, dict[str, str]] = {
    "title": {"en": "patronbot staff console", "zh": "patronbot 馆员工作台"},
    "skip": {"en": "Skip to the main content", "zh": "跳到主要内容"},
    "nav": {"en": "Console sections", "zh": "工作台栏目"},
    "inbox": {"en": "Inbox", "zh": "待办会话"},
    "audit": {"en": "Audit log", "zh": "审计日志"},
    "feedback": {"en": "Feedback", "zh": "读者反馈"},
    "suggestions": {"en": "Suggestions and requests", "zh": "建议与荐购"},
    "report_heading": {"en": "No. {id} ({kind})", "zh": "编号 {id}（{kind}）"},
    "erased": {"en": "(erased at the patron's request)", "zh": "（应读者要求已删除）"},
    "library_answer": {"en": "Library's answer:", "zh": "图书馆答复："},
    "answer_patron": {
        "en": "Answer (sent to the patron on their channel)",
        "zh": "答复（将通过读者使用的渠道发送）",
    },
    "new_status": {"en": "Status", "zh": "状态"},
    "keep_status": {"en": "keep as it is", "zh": "保持不变"},
    "send_answer": {"en": "Send the answer", "zh": "发送答复"},
    "no_suggestions": {"en": "No suggestions or requests.", "zh": "暂无建议或荐购。"},
    "done_answered": {"en": "The answer is on its way to the patron.", "zh": "答复已发送给读者。"},
    "csat_by_week": {"en": "Satisfaction (CSAT, 1-5) by week", "zh": "每周满意度（CSAT，1-5）"},
    "nps_by_week": {"en": "Net promoter score (NPS) by week", "zh": "每周净推荐值（NPS）"},
    "by_week": {"en": "By week", "zh": "按周"},
    "by_topic": {"en": "By topic", "zh": "按主题"},
    "by_channel": {"en": "By channel", "zh": "按渠道"},
    "group_week": {"en": "Week of", "zh": "周起始日"},
    "group_topic": {"en": "Topic", "zh": "主题"},
    "group_channel": {"en": "Channel", "zh": "渠道"},
    "ratings": {"en": "ratings", "zh": "评分数"},
    "helpful": {"en": "Found it helpful", "zh": "认为有帮助"},
    "csv": {"en": "Download CSV", "zh": "下载 CSV"},
    "no_ratings": {"en": "No ratings yet.", "zh": "暂无评分。"},
    "sign_in": {"en": "Sign in", "zh": "登录"},
    "sign_out": {"en": "Sign out", "zh": "退出登录"},
    "username": {"en": "Username", "zh": "用户名"},
    "password": {"en": "Password", "zh": "密码"},
    "wrong": {"en": "Wrong username or password.", "zh": "用户名或密码错误。"},
    "limited": {
        "en": "Too many failed sign-ins. Try again in {seconds} seconds.",
        "zh": "登录失败次数过多，请 {seconds} 秒后再试。",
    },
    "language": {"en": "Language", "zh": "语言"},
    "switch": {"en": "Switch", "zh": "切换"},
    "signed_in_as": {"en": "Signed in as {name} ({role})", "zh": "当前用户：{name}（{role}）"},
    "open_escalations": {"en": "Open escalations", "zh": "待处理的转人工会话"},
    "none_open": {"en": "No open escalations.", "zh": "暂无待处理的会话。"},
    "updated_live": {"en": "This list updates by itself.", "zh": "列表会自动更新。"},
    "col_id": {"en": "No.", "zh": "编号"},
    "col_priority": {"en": "Priority", "zh": "优先级"},
    "col_reason": {"en": "Reason", "zh": "原因"},
    "col_channel": {"en": "Channel", "zh": "渠道"},
    "col_status": {"en": "Status", "zh": "状态"},
    "col_due": {"en": "Due", "zh": "截止"},
    "col_waiting": {"en": "Latest message", "zh": "读者最新消息"},
    "col_assignee": {"en": "Librarian", "zh": "负责馆员"},
    "overdue": {"en": "overdue", "zh": "已超时"},
    "open": {"en": "Open", "zh": "打开"},
    "escalation": {"en": "Escalation {id}", "zh": "转人工会话 {id}"},
    "transcript": {"en": "Conversation", "zh": "对话记录"},
    "patron": {"en": "Patron", "zh": "读者"},
    "bot": {"en": "Bot", "zh": "机器人"},
    "intent": {"en": "intent", "zh": "意图"},
    "claim": {"en": "Claim", "zh": "认领"},
    "reply": {"en": "Reply to the patron", "zh": "回复读者"},
    "send": {"en": "Send", "zh": "发送"},
    "note": {"en": "Internal note (never sent to the patron)", "zh": "内部备注（不会发给读者）"},
    "add_note": {"en": "Add note", "zh": "添加备注"},
    "notes": {"en": "Notes", "zh": "备注"},
    "transfer": {"en": "Transfer to (username)", "zh": "转交给（用户名）"},
    "do_transfer": {"en": "Transfer", "zh": "转交"},
    "resolve_note": {"en": "Resolution note", "zh": "处理说明"},
    "resolve": {"en": "Resolve", "zh": "标记已解决"},
    "give_back": {"en": "Give back to the bot", "zh": "交还给机器人"},
    "view_patron": {"en": "Patron profile", "zh": "读者档案"},
    "done_claimed": {"en": "Claimed: the conversation is yours.", "zh": "已认领：此会话由您负责。"},
    "done_replied": {"en": "Reply sent to the patron.", "zh": "回复已发送给读者。"},
    "done_noted": {"en": "Note added.", "zh": "已添加备注。"},
    "done_transferred": {"en": "Transferred.", "zh": "已转交。"},
    "done_resolved": {
        "en": "Resolved: the bot answers the patron again.",
        "zh": "已解决：机器人将继续为读者服务。",
    },
    "done_given_back": {"en": "Given back to the bot.", "zh": "已交还给机器人。"},
    "problem": {"en": "Not done: {message}", "zh": "未完成：{message}"},
    "profile": {"en": "Patron {id}", "zh": "读者 {id}"},
    "channels": {"en": "Channels", "zh": "渠道"},
    "consents": {"en": "Consents", "zh": "同意授权"},
    "granted": {"en": "granted", "zh": "已同意"},
    "withdrawn": {"en": "not given", "zh": "未同意"},
    "recent": {"en": "Recent messages", "zh": "最近消息"},
    "patron_type": {"en": "Type", "zh": "读者类型"},
    "interests": {"en": "Interests", "zh": "兴趣"},
    "last_seen": {"en": "Last seen", "zh": "最近活跃"},
    "audit_intro": {
        "en": "Every read or change of a patron's data.",
        "zh": "每一次读取或修改读者数据的记录。",
    },
    "filter": {"en": "Filter", "zh": "筛选"},
    "staff": {"en": "Staff", "zh": "馆员"},
    "action": {"en": "Action", "zh": "操作"},
    "reason": {"en": "Reason", "zh": "事由"},
    "when": {"en": "When", "zh": "时间"},
    "any": {"en": "any", "zh": "全部"},
}


def add_texts(texts: dict[str, dict[str, str]]) -> None:
    """A console feature's words joining TEXT, each in both languages; a key used twice is an error."""
    for key, words in texts.items():
        if key in TEXT:
            raise ValueError(f"console text {key!r} is defined twice")
        if set(words) != set(LANGUAGES):
            raise ValueError(f"console text {key!r} needs exactly {', '.join(LANGUAGES)}")
        TEXT[key] = words


def chosen_language(request: Request, remembered: str | None = None) -> str:
    """The staff member's remembered choice, else ?lang=, else the browser's first language, else Chinese."""
    if remembered in LANGUAGES:
        return str(remembered)
    asked = request.query_params.get("lang")
    if asked in LANGUAGES:
        return str(asked)
    accepted = request.headers.get("accept-language", "").lower()
    return "en" if accepted.startswith("en") else "zh"


def translator(language: str) -> Callable[..., str]:
    """`t(key, **fields)`: the console's words for `key` in `language`."""

    def t(key: str, **fields: object) -> str:
        words = TEXT.get(key, {}).get(language) or TEXT.get(key, {}).get("en") or key
        return words.format(**fields) if fields else words

    return t
