// Optional enhancements; every page works without this file.
(function () {
  "use strict";
  function ready(fn) {
    if (document.readyState !== "loading") fn(); else document.addEventListener("DOMContentLoaded", fn);
  }
  ready(function () {
    // Local time on hover: the text stays UTC.
    document.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) t.title = d.toLocaleString() + " (local) · " + t.getAttribute("datetime");
    });
    // On a narrow screen the grid scrolls sideways: start at the newest days, not the oldest.
    document.querySelectorAll(".scroll.days").forEach(function (box) {
      box.scrollLeft = box.scrollWidth;
    });
    // Copy buttons next to rerun commands.
    document.querySelectorAll("button.copy[data-copy]").forEach(function (b) {
      b.hidden = false;
      b.addEventListener("click", function () {
        var text = b.getAttribute("data-copy");
        var done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy"; }, 1500); };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () {});
        } else {
          var code = b.parentNode.querySelector("code");
          var range = document.createRange(); range.selectNodeContents(code);
          var sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
          try { if (document.execCommand("copy")) done(); } catch (e) { /* text stays selected */ }
        }
      });
    });
    // Live filter of the grid as you type (the form still works without JS).
    var q = document.getElementById("q");
    if (q && document.querySelector("table.grid")) {
      q.addEventListener("input", function () {
        var needle = q.value.trim().toLowerCase();
        document.querySelectorAll("tbody.owner").forEach(function (body) {
          var any = false;
          body.querySelectorAll("tr.jobrow").forEach(function (row) {
            var hit = !needle || row.getAttribute("data-search").toLowerCase().indexOf(needle) >= 0;
            row.hidden = !hit; any = any || hit;
          });
          body.hidden = !any;
        });
      });
    }
  });
})();
