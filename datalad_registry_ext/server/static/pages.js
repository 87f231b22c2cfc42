// registry-serve's pages work without this script; it only adds "/" to
// focus the search box (unless typing in a field already).
(function () {
  "use strict";
  document.addEventListener("keydown", function (event) {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    var target = event.target;
    var tag = target && target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" ||
        (target && target.isContentEditable)) {
      return;
    }
    var box = document.getElementById("query");
    if (box) {
      event.preventDefault();
      box.focus();
      box.select();
    }
  });
}());
