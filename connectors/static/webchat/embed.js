/* patronbot web chat: the snippet a library puts on its pages loads this file (see docs/webchat.md).
 *
 *   <script src="https://BOT/webhooks/webchat/static/embed.js" data-source="website" defer></script>
 *
 * It loads the rasa-webchat 1.0.1 widget from the bot, starts it against the bot's socket.io endpoint,
 * and adds what the widget lacks for keyboard and screen-reader use (names, roles, focus into the window
 * and back, Escape to close). data-source
 * says where the patron met the bot (the CRM's channel_identity.source); data-lang ("zh" or "en")
 * chooses the labels, by default the page's <html lang>.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.src) {
    return;
  }
  var here = new URL(script.src, document.baseURI);
  var base = here.href.replace(/static\/embed\.js(\?.*)?$/, ""); // .../webhooks/webchat/
  var socketPath = new URL(base).pathname + "socket.io/";
  var source = (script.getAttribute("data-source") || "website").slice(0, 200);
  var lang = (script.getAttribute("data-lang") || document.documentElement.lang || "zh").slice(0, 2);
  var L = {
    zh: {
      title: "图书馆咨询",
      subtitle: "Ask the library · 中文 / English",
      hint: "输入您的问题 / Type your question",
      open: "打开图书馆咨询 / Open the library chat",
      close: "关闭咨询窗口 / Close the chat",
      send: "发送 / Send",
      log: "对话记录 / Conversation",
      input: "您的消息 / Your message",
      replies: "快速回复 / Quick replies",
    },
    en: {
      title: "Ask the library",
      subtitle: "图书馆咨询 · English / 中文",
      hint: "Type your question / 输入您的问题",
      open: "Open the library chat / 打开图书馆咨询",
      close: "Close the chat / 关闭咨询窗口",
      send: "Send / 发送",
      log: "Conversation / 对话记录",
      input: "Your message / 您的消息",
      replies: "Quick replies / 快速回复",
    },
  }[lang === "en" ? "en" : "zh"];

  var css = document.createElement("link");
  css.rel = "stylesheet";
  css.href = base + "static/webchat.css";
  document.head.appendChild(css);

  function label(element, name) {
    if (element && element.getAttribute("aria-label") !== name) {
      element.setAttribute("aria-label", name);
    }
  }

  var wasOpen = false;

  // Opening the window takes the focus to its message field, closing it gives it back to the launcher
  // (WCAG 2.4.3), when the patron was using the widget (never stolen from the page on load).
  function moveFocus(root, launcher, isOpen) {
    if (isOpen === wasOpen) {
      return;
    }
    wasOpen = isOpen;
    var active = document.activeElement;
    var inWidget = !active || active === document.body || root.contains(active);
    if (!inWidget) {
      return;
    }
    if (isOpen) {
      var input = root.querySelector(".rw-new-message");
      if (input) {
        input.focus();
      }
    } else if (launcher) {
      launcher.focus();
    }
  }

  // The widget renders with React and re-renders often: its elements are named again after each change.
  function mend(root) {
    // The launcher opens the window, and closes it (showing a cross) while it is open.
    var launcher = root.querySelector(".rw-launcher");
    var isOpen = Boolean(root.querySelector(".rw-conversation-container"));
    if (launcher) {
      label(launcher, isOpen ? L.close : L.open);
      launcher.setAttribute("aria-expanded", isOpen ? "true" : "false");
    }
    moveFocus(root, launcher, isOpen);
    label(root.querySelector(".rw-close-button"), L.close);
    // The widget's title is an <h4>: a page's outline wants the level after the page's own sections.
    var title = root.querySelector(".rw-title");
    if (title && title.getAttribute("aria-level") !== "2") {
      title.setAttribute("aria-level", "2");
    }
    label(root.querySelector(".rw-send"), L.send);
    label(root.querySelector(".rw-new-message"), L.input);
    var messages = root.querySelector(".rw-messages-container");
    if (messages) {
      messages.setAttribute("role", "log");
      messages.setAttribute("aria-live", "polite");
      messages.setAttribute("tabindex", "0");
      label(messages, L.log);
    }
    var replies = root.querySelectorAll(".rw-replies");
    for (var i = 0; i < replies.length; i++) {
      replies[i].setAttribute("role", "group");
      label(replies[i], L.replies);
    }
    // Quick replies are <div>s with a click handler: make them buttons for the keyboard.
    var choices = root.querySelectorAll(".rw-reply");
    for (var j = 0; j < choices.length; j++) {
      var choice = choices[j];
      if (choice.tagName !== "BUTTON" && !choice.hasAttribute("role")) {
        choice.setAttribute("role", "button");
        choice.setAttribute("tabindex", "0");
      }
    }
  }

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    // Escape closes the open window from anywhere inside it.
    var root = document.getElementById("patronbot-webchat");
    if (event.key === "Escape" && root && target && root.contains(target)) {
      if (root.querySelector(".rw-conversation-container")) {
        var closer = root.querySelector(".rw-close-button") || root.querySelector(".rw-launcher");
        if (closer) {
          event.preventDefault();
          closer.click();
        }
      }
      return;
    }
    if (!target || !target.classList || !target.classList.contains("rw-reply") || target.tagName === "BUTTON") {
      return;
    }
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      target.click();
    }
  });

  function start() {
    // A landmark of its own, so a screen reader's region list finds the chat.
    var root = document.createElement("aside");
    root.id = "patronbot-webchat";
    root.setAttribute("aria-label", L.title);
    document.body.appendChild(root);
    new MutationObserver(function () {
      mend(root);
    }).observe(root, { childList: true, subtree: true });
    window.WebChat.default(
      {
        socketUrl: new URL(base).origin,
        socketPath: socketPath,
        customData: { source: source },
        title: L.title,
        subtitle: L.subtitle,
        inputTextFieldHint: L.hint,
        initPayload: "/greet",
        hideWhenNotConnected: true,
        customMessageDelay: function (message) {
          return Math.min(1500, Math.max(300, String(message || "").length * 15));
        },
        params: { storage: "local" },
        onSocketEvent: {
          patronbot_error: function (refusal) {
            if (window.console) {
              window.console.warn("patronbot web chat:", refusal && refusal.message);
            }
          },
        },
      },
      root
    );
  }

  var widget = document.createElement("script");
  widget.src = base + "static/rasa-webchat.js";
  widget.async = true;
  widget.onload = start;
  document.head.appendChild(widget);
})();
