"""A campaign's report as the console shows it: its counts in order, in words, as SVG bars and as CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

from bot.outreach.report import CampaignReport

CHART_WIDTH, ROW_HEIGHT, LABEL_WIDTH = 720, 26, 280


def report_rows(report: CampaignReport) -> list[tuple[str, int]]:
    """The report's counts, each a (figure, count): deliveries by outcome, skips by reason, then what
    patrons did after it."""
    rows = [
        ("deliveries", report.deliveries),
        ("sent", report.sent),
        ("queued", report.queued),
        ("waiting", report.waiting),
        ("failed", report.failed),
        ("unknown_outcome", report.unknown_outcome),
        ("cancelled", report.cancelled),
    ]
    rows += [(f"skipped:{reason}", count) for reason, count in report.skipped.items()]
    rows += [("replies", report.replies), ("opt_outs", report.opt_outs), ("answers", report.answers)]
    return rows


def rating_rows(report: CampaignReport) -> list[tuple[str, Any]]:
    return [(f"ratings:{key}", value) for key, value in report.ratings.items()]


def report_bars(rows: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Horizontal bars for an SVG chart of the counts (the longest is the chart's width)."""
    most = max([count for _, count in rows] + [1])
    room = CHART_WIDTH - LABEL_WIDTH - 48
    return [
        {
            "y": index * ROW_HEIGHT,
            "width": round(count / most * room, 1),
            "label": label,
            "value": count,
        }
        for index, (label, count) in enumerate(rows)
    ]


def report_csv(report: CampaignReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["figure", "value"])
    for label, value in [*report_rows(report), *rating_rows(report)]:
        writer.writerow([label, "" if value is None else value])
    return out.getvalue()


# The report's figures in words (report_rows' and rating_rows' keys); a key without words is shown as is.
FIGURES = {
    "deliveries": ("Deliveries", "推送对象"),
    "sent": ("Sent", "已发送"),
    "queued": ("Queued to send", "待发送"),
    "waiting": ("Waiting for the morning", "等待免打扰时段结束"),
    "failed": ("Failed", "发送失败"),
    "unknown_outcome": ("Outcome unknown (not resent)", "结果未知（不重发）"),
    "cancelled": ("Cancelled", "已取消"),
    "replies": ("Patrons who replied", "回复的读者"),
    "opt_outs": ("Opted out after it", "之后退订"),
    "answers": ("Answers to its question", "对提问的回答"),
    "skipped:no_consent": ("Skipped: no consent", "跳过：未同意"),
    "skipped:opted_out": ("Skipped: opted out", "跳过：已退订"),
    "skipped:paused": ("Skipped: patron paused messages", "跳过：读者暂停推送"),
    "skipped:unreachable": ("Skipped: unreachable", "跳过：无法联系"),
    "skipped:erased": ("Skipped: data erased", "跳过：数据已删除"),
    "skipped:no_channel": ("Skipped: no channel", "跳过：无可用渠道"),
    "skipped:window_closed": ("Skipped: WeChat 48-hour window closed", "跳过：微信48小时窗口已关闭"),
    "skipped:cap": ("Skipped: weekly limit reached", "跳过：已达每周上限"),
    "skipped:in_conversation": ("Skipped: in a conversation", "跳过：正在对话中"),
    "skipped:quiet_hours": ("Skipped: quiet hours", "跳过：免打扰时段"),
    "skipped:other": ("Skipped: other reason", "跳过：其他原因"),
    "ratings:csat_count": ("Satisfaction ratings", "满意度评分数"),
    "ratings:csat_mean": ("Mean satisfaction (1-5)", "平均满意度（1-5）"),
    "ratings:nps_count": ("Recommendation scores", "推荐度评分数"),
    "ratings:nps_mean": ("Mean recommendation (0-10)", "平均推荐度（0-10）"),
    "ratings:helpful_yes": ("Found it helpful", "认为有帮助"),
    "ratings:helpful_no": ("Did not find it helpful", "认为没有帮助"),
    "ratings:comments": ("Comments", "留言"),
}

TEXT = {f"fig_{key}": {"en": en, "zh": zh} for key, (en, zh) in FIGURES.items()}
