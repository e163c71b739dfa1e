// Suggested answers on an escalation: "Insert into reply" puts the answer into the reply box. The
// buttons stay hidden without JavaScript (the answers are still there to copy) or without a reply box.
(function () {
  "use strict";

  function reveal() {
    var reply = document.getElementById("reply-text");
    document.querySelectorAll("button[data-insert-reply]").forEach(function (button) {
      button.hidden = !reply;
    });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-insert-reply]");
    var reply = document.getElementById("reply-text");
    if (!button || !reply) {
      return;
    }
    var source = document.getElementById(button.getAttribute("data-insert-reply"));
    if (!source) {
      return;
    }
    var text = source.textContent.trim();
    reply.value = reply.value.trim() ? reply.value.replace(/\s+$/, "") + "\n\n" + text : text;
    reply.dispatchEvent(new Event("input", { bubbles: true })); // drafts.js keeps the typed text
    reply.focus();
  });

  document.addEventListener("DOMContentLoaded", reveal);
  document.addEventListener("htmx:afterSwap", reveal);
})();
