// Keeps what a librarian types in a field marked data-draft="<done>" (a reply, a note, a knowledge-base
// answer) in this tab's sessionStorage until the server says that was done (?done=<done> in the address),
// so nothing typed is lost when the session ended in the middle of a reply (signing in again brings the
// librarian back to the page) or the server refused it (too long, a stale edit).
(function () {
  "use strict";
  function key(field) {
    return "patronbot-draft:" + window.location.pathname + "#" + field.id;
  }
  function fields() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-draft]"));
  }
  function start() {
    var done = new URLSearchParams(window.location.search).get("done");
    fields().forEach(function (field) {
      if (!field.id) { return; }
      if (done && done === field.getAttribute("data-draft")) {
        window.sessionStorage.removeItem(key(field));  // the server did what was asked: the draft is spent
      } else if (!field.value) {
        var kept = window.sessionStorage.getItem(key(field));
        if (kept) {
          field.value = kept;
          field.setAttribute("data-draft-restored", "true");
        }
      }
      field.addEventListener("input", function () {
        if (field.value) {
          window.sessionStorage.setItem(key(field), field.value);
        } else {
          window.sessionStorage.removeItem(key(field));
        }
      });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
