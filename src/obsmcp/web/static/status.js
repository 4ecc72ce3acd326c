// obsmcp status page: progressive enhancement only (the page works without it).
// Picking a service shows it at once; "refresh every 30 s" reloads the page, remembered in this browser.
"use strict";
(function () {
  var select = document.getElementById("service-select");
  if (select && select.form) {
    select.addEventListener("change", function () { select.form.submit(); });
  }
  var box = document.getElementById("auto-refresh");
  if (!box) { return; }
  var KEY = "obsmcp.autoRefresh";
  var timer = null;
  function schedule() {
    if (timer) { clearTimeout(timer); timer = null; }
    if (box.checked) { timer = setTimeout(function () { window.location.reload(); }, 30000); }
  }
  try { box.checked = window.localStorage.getItem(KEY) === "1"; } catch (e) { box.checked = false; }
  box.addEventListener("change", function () {
    try { window.localStorage.setItem(KEY, box.checked ? "1" : "0"); } catch (e) { /* storage off: this page only */ }
    schedule();
  });
  schedule();
})();
