"""The console's feedback page: CSAT and NPS by week, topic and channel, drawn as server-side SVG with
the numbers in a table beside each chart, and each as a CSV download; the same as JSON for the API."""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.engagement.insight import GROUPINGS, Score, feedback_scores
from console.answers import answer, error
from console.gate import Staff, staff_only
from console.pages import render

CHART_WIDTH, CHART_HEIGHT, BAR_GAP, WIDEST_BAR = 640, 180, 8, 56


def bars(scores: list[Score], *, field: str, low: float, high: float) -> list[dict[str, Any]]:
    """Bars for an SVG chart of `field` (scaled from `low`..`high` to the chart's height)."""
    shown = [score for score in scores if getattr(score, field) is not None]
    if not shown:
        return []
    width = min(max(CHART_WIDTH // len(shown) - BAR_GAP, 4), WIDEST_BAR)
    zero = CHART_HEIGHT * high / (high - low) if low < 0 else CHART_HEIGHT
    drawn = []
    for index, score in enumerate(shown):
        value = float(getattr(score, field))
        height = abs(value) / (high - low) * CHART_HEIGHT
        top = zero - height if value >= 0 else zero
        drawn.append(
            {
                "x": index * (width + BAR_GAP),
                "y": round(top, 1),
                "width": width,
                "height": round(height, 1),
                "label": score.group,
                "value": value,
            }
        )
    return drawn


def _scores(staff: Staff, request: Request, by: str) -> Any:
    zone = request.app.state.zone
    return staff.crm(lambda session, _: feedback_scores(session=session, by=by, zone=zone))


@staff_only()
async def feedback_page(request: Request, staff: Staff) -> Response:
    views = {by: await _scores(staff, request, by) for by in GROUPINGS}
    charts = {
        "csat": bars(views["week"], field="csat", low=0, high=5),
        "nps": bars(views["week"], field="nps", low=-100, high=100),
    }
    return render(
        request,
        "feedback.html",
        staff.signed,
        section="feedback",
        views=views,
        charts=charts,
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
    )


def _grouping(request: Request) -> str | None:
    by = request.query_params.get("by", "week")
    return by if by in GROUPINGS else None


@staff_only()
async def feedback_csv(request: Request, staff: Staff) -> Response:
    by = _grouping(request)
    if by is None:
        return Response(f"by must be one of {', '.join(GROUPINGS)}", status_code=400)
    out = io.StringIO()
    fields = [field.name for field in dataclasses.fields(Score)]
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for score in await _scores(staff, request, by):
        writer.writerow(dataclasses.asdict(score))
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="feedback-by-{by}.csv"'},
    )


@staff_only()
async def feedback_api(request: Request, staff: Staff) -> Response:
    by = _grouping(request)
    if by is None:
        return error(400, f"'by' must be one of {', '.join(GROUPINGS)}")
    return answer(
        {"by": by, "scores": [dataclasses.asdict(score) for score in await _scores(staff, request, by)]}
    )


ROUTES = [
    Route("/feedback", feedback_page, methods=["GET"]),
    Route("/feedback.csv", feedback_csv, methods=["GET"]),
    Route("/api/feedback", feedback_api, methods=["GET"]),
]
