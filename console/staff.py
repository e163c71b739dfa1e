"""The staff accounts page and API (admins only): list staff, add one, change a role, deactivate or
reactivate, reset a password; each change audited, and a deactivated member's sessions ended at once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bot.crm.audit import log_access
from bot.crm.models import StaffUser
from bot.crm.models.staff import STAFF_ROLES
from console.accounts import (
    MIN_PASSWORD_CHARS,
    StaffConflictError,
    StaffError,
    StaffNotFoundError,
    add_staff,
    change_role,
    list_staff,
    member_of,
    reset_password,
    set_active,
)
from console.answers import answer, error
from console.api import BadInputError, body_of, text_field
from console.gate import ADMIN, Staff, one_route, staff_only
from console.i18n import add_texts
from console.openapi import add_paths
from console.openapi_parts import CSRF, ROW_ID, errors, json_body, json_content, ref, text_schema
from console.pages import render

TEXT = {
    "staff_nav": {"en": "Staff", "zh": "馆员账号"},
    "staff_title": {"en": "Staff accounts", "zh": "馆员账号"},
    "staff_display_name": {"en": "Display name (optional)", "zh": "显示名称（可选）"},
    "staff_role": {"en": "Role", "zh": "角色"},
    "staff_active": {"en": "Active", "zh": "状态"},
    "staff_is_active": {"en": "active", "zh": "启用"},
    "staff_is_inactive": {"en": "deactivated", "zh": "已停用"},
    "staff_last_sign_in": {"en": "Last sign-in", "zh": "最近登录"},
    "staff_add": {"en": "Add a staff member", "zh": "添加馆员"},
    "staff_password_new": {
        "en": "Initial password (at least {n} characters)",
        "zh": "初始密码（至少 {n} 个字符）",
    },
    "staff_password_again": {"en": "The password again", "zh": "再次输入密码"},
    "staff_add_button": {"en": "Add", "zh": "添加"},
    "staff_change_role": {"en": "Change role", "zh": "修改角色"},
    "staff_deactivate": {"en": "Deactivate", "zh": "停用"},
    "staff_activate": {"en": "Reactivate", "zh": "重新启用"},
    "staff_reset": {"en": "Reset password", "zh": "重置密码"},
    "staff_reset_for": {"en": "New password for {name}", "zh": "{name} 的新密码"},
    "staff_reset_again": {"en": "The new password again", "zh": "再次输入新密码"},
    "staff_manage": {"en": "Manage {name}", "zh": "管理 {name}"},
    "staff_you": {"en": "(you)", "zh": "（您）"},
    "staff_mismatch": {
        "en": "The two passwords differ: nothing changed.",
        "zh": "两次输入的密码不一致，未做修改。",
    },
    "staff_done_added": {"en": "Staff member added: they can sign in now.", "zh": "已添加馆员，可立即登录。"},
    "staff_done_role": {"en": "Role changed.", "zh": "角色已修改。"},
    "staff_done_deactivated": {
        "en": "Deactivated: their sessions have ended.",
        "zh": "已停用，其登录会话已结束。",
    },
    "staff_done_activated": {"en": "Reactivated.", "zh": "已重新启用。"},
    "staff_done_password": {
        "en": "Password reset: their other sessions have ended.",
        "zh": "密码已重置，其他登录会话已结束。",
    },
}
add_texts(TEXT)

DONE = ("added", "role", "deactivated", "activated", "password")
Work = Callable[[Session, StaffUser], Any]


def _audited(user: StaffUser, session: Session, change: str, target: StaffUser, **detail: Any) -> None:
    log_access(
        session=session,
        actor=f"staff:{user.username}",
        action="update",
        patron_id=None,
        reason=f"console: staff account {target.username}: {change}",
        staff_user=user,
        detail={"staff_user_id": int(target.id), "change": change, **detail},
    )


def _add(username: str, role: str, password: str, display_name: str | None) -> Work:
    def work(session: Session, user: StaffUser) -> dict[str, Any]:
        added = add_staff(
            session=session, username=username, role=role, password=password, display_name=display_name
        )
        _audited(user, session, "added", added, role=role)
        return dataclasses.asdict(member_of(added))

    return work


def _role(staff_id: int, role: str) -> Work:
    def work(session: Session, user: StaffUser) -> dict[str, Any]:
        changed = change_role(session=session, staff_id=staff_id, role=role)
        _audited(user, session, f"role {role}", changed, role=role)
        return dataclasses.asdict(member_of(changed))

    return work


def _active(staff_id: int, active: bool) -> Work:
    def work(session: Session, user: StaffUser) -> dict[str, Any]:
        changed = set_active(session=session, staff_id=staff_id, active=active, by=user)
        _audited(user, session, "activated" if active else "deactivated", changed)
        return dataclasses.asdict(member_of(changed))

    return work


def _password(staff_id: int, password: str, keep_csrf: str) -> Work:
    def work(session: Session, user: StaffUser) -> dict[str, Any]:
        # One's own current session stays; every other session of that member ends.
        changed = reset_password(session=session, staff_id=staff_id, password=password, keep_csrf=keep_csrf)
        _audited(user, session, "password reset", changed)
        return dataclasses.asdict(member_of(changed))

    return work


async def _answer(staff: Staff, work: Work) -> Response:
    try:
        return answer(await staff.crm(work))
    except StaffNotFoundError as problem:
        return error(404, str(problem))
    except StaffConflictError as problem:
        return error(409, str(problem))
    except StaffError as problem:
        return error(400, str(problem))


def _staff_id(request: Request) -> int:
    value: int = request.path_params["staff_id"]
    return value


@staff_only(ADMIN)
async def staff_api(request: Request, staff: Staff) -> Response:
    members = await staff.crm(lambda session, _: list_staff(session=session))
    return answer({"staff": [dataclasses.asdict(member) for member in members]})


@staff_only(ADMIN)
async def add_api(request: Request, staff: Staff) -> Response:
    try:
        data = await body_of(request)
        username = text_field(data, "username", longest=100)
        role = text_field(data, "role", longest=20)
        password = text_field(data, "password", longest=1000, blank=True)
        display_name = text_field(data, "display_name", required=False, longest=200) or None
    except BadInputError as problem:
        return error(400, str(problem))
    return await _answer(staff, _add(username, role, password, display_name))


@staff_only(ADMIN)
async def role_api(request: Request, staff: Staff) -> Response:
    try:
        role = text_field(await body_of(request), "role", longest=20)
    except BadInputError as problem:
        return error(400, str(problem))
    return await _answer(staff, _role(_staff_id(request), role))


def _activation_api(active: bool) -> Callable[[Request], Any]:
    @staff_only(ADMIN)
    async def act(request: Request, staff: Staff) -> Response:
        return await _answer(staff, _active(_staff_id(request), active))

    return act


@staff_only(ADMIN)
async def password_api(request: Request, staff: Staff) -> Response:
    try:
        password = text_field(await body_of(request), "password", longest=1000, blank=True)
    except BadInputError as problem:
        return error(400, str(problem))
    return await _answer(staff, _password(_staff_id(request), password, staff.signed.csrf_token))


@staff_only(ADMIN)
async def staff_page(request: Request, staff: Staff) -> Response:
    members = await staff.crm(lambda session, _: list_staff(session=session))
    done = request.query_params.get("staff_done")
    return render(
        request,
        "staff.html",
        staff.signed,
        section="staff",
        members=members,
        roles=STAFF_ROLES,
        shortest=MIN_PASSWORD_CHARS,
        notice=f"staff_done_{done}" if done in DONE else None,
        mismatch=request.query_params.get("staff_problem") == "mismatch",
    )


async def _form_action(staff: Staff, work: Work | None, done: str) -> Response:
    """Do a form's change, then back to the staff page with what was done or why not (None: the two
    passwords typed differ)."""
    if work is None:
        return RedirectResponse("/staff?staff_problem=mismatch", status_code=303)
    try:
        await staff.crm(work)
    except StaffError as problem:
        return RedirectResponse(f"/staff?problem={quote(str(problem))}", status_code=303)
    return RedirectResponse(f"/staff?staff_done={done}", status_code=303)


def _twice(form: Any) -> str | None:
    """The password typed twice, or None when the two differ."""
    first, second = str(form.get("password") or ""), str(form.get("password_again") or "")
    return first if first == second else None


@staff_only(ADMIN)
async def add_form(request: Request, staff: Staff) -> Response:
    form = await request.form()
    password = _twice(form)
    username, role = str(form.get("username") or "")[:100], str(form.get("role") or "")
    display_name = str(form.get("display_name") or "").strip()[:200] or None
    work = None if password is None else _add(username, role, password, display_name)
    return await _form_action(staff, work, "added")


@staff_only(ADMIN)
async def role_form(request: Request, staff: Staff) -> Response:
    form = await request.form()
    return await _form_action(staff, _role(_staff_id(request), str(form.get("role") or "")), "role")


def _activation_form(active: bool) -> Callable[[Request], Any]:
    @staff_only(ADMIN)
    async def act(request: Request, staff: Staff) -> Response:
        work = _active(_staff_id(request), active)
        return await _form_action(staff, work, "activated" if active else "deactivated")

    return act


@staff_only(ADMIN)
async def password_form(request: Request, staff: Staff) -> Response:
    password = _twice(await request.form())
    work = None if password is None else _password(_staff_id(request), password, staff.signed.csrf_token)
    return await _form_action(staff, work, "password")


_MEMBER = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "username": {"type": "string"},
        "display_name": {"type": "string", "nullable": True},
        "role": {"type": "string", "enum": list(STAFF_ROLES)},
        "active": {"type": "boolean"},
        "can_sign_in": {"type": "boolean"},
        "last_sign_in_at": {"type": "string", "format": "date-time", "nullable": True},
    },
    "required": ["id", "username", "role", "active", "can_sign_in", "last_sign_in_at"],
}
_ROLE = {"type": "string", "enum": list(STAFF_ROLES)}
_PASSWORD = {"type": "string", "minLength": MIN_PASSWORD_CHARS, "maxLength": 1000}
_STAFF_ID = {"name": "staff_id", "in": "path", "required": True, "schema": ROW_ID}
_REFUSED = (
    "refused: the name is taken, it would leave no active admin, or admins cannot deactivate themselves"
)


def _change(summary: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [_STAFF_ID, *CSRF],
        "responses": {
            "200": json_content(ref("StaffMember"), "the staff member as they are now"),
            **errors(400, 401, 403, 404, 409, e404="no such staff member", e409=_REFUSED),
        },
    }
    if body is not None:
        operation["requestBody"] = body
    return {"post": operation}


PATHS = {
    "/api/staff": {
        "get": {
            "summary": "Staff accounts with role, whether active, and the last sign-in on record (admins)",
            "responses": {
                "200": json_content(
                    {
                        "type": "object",
                        "properties": {"staff": {"type": "array", "items": ref("StaffMember")}},
                        "required": ["staff"],
                    },
                    "the staff",
                ),
                **errors(401, 403),
            },
        },
        "post": {
            "summary": "Add a staff member who can sign in (admins; audited)",
            "parameters": CSRF,
            "requestBody": json_body(
                {
                    # No space or control character (ECMA's \S alone lets \x1c-\x1f and \x85 through).
                    "username": {**text_schema(100), "pattern": r"^[^\s\x00-\x1f\x7f-\x9f]+$"},
                    "role": _ROLE,
                    "password": _PASSWORD,
                    "display_name": {
                        "type": "string",
                        "maxLength": 200,
                        "pattern": r"^[^\x00-\x1f\x7f-\x9f]*$",
                    },
                },
                ["username", "role", "password"],
            ),
            "responses": {
                "200": json_content(ref("StaffMember"), "added"),
                **errors(400, 401, 403, 409, e409="a staff member with that name can sign in already"),
            },
        },
    },
    "/api/staff/{staff_id}/deactivate": _change("Deactivate: they cannot sign in, their sessions end"),
    "/api/staff/{staff_id}/activate": _change("Reactivate a deactivated staff member"),
    "/api/staff/{staff_id}/role": _change("Change the role", json_body({"role": _ROLE}, ["role"])),
    "/api/staff/{staff_id}/password": _change(
        "Reset the password; their other sessions end", json_body({"password": _PASSWORD}, ["password"])
    ),
}
add_paths(PATHS, {"StaffMember": _MEMBER})

ROUTES = [
    one_route("/staff", {"GET": staff_page, "POST": add_form}),
    Route("/staff/{staff_id:id}/role", role_form, methods=["POST"]),
    Route("/staff/{staff_id:id}/deactivate", _activation_form(False), methods=["POST"]),
    Route("/staff/{staff_id:id}/activate", _activation_form(True), methods=["POST"]),
    Route("/staff/{staff_id:id}/password", password_form, methods=["POST"]),
    one_route("/api/staff", {"GET": staff_api, "POST": add_api}),
    Route("/api/staff/{staff_id:id}/deactivate", _activation_api(False), methods=["POST"]),
    Route("/api/staff/{staff_id:id}/activate", _activation_api(True), methods=["POST"]),
    Route("/api/staff/{staff_id:id}/role", role_api, methods=["POST"]),
    Route("/api/staff/{staff_id:id}/password", password_api, methods=["POST"]),
]
