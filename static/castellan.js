// castellan's hosted pages work without this file. It only adds two
// conveniences: "show password" switches and the print button. It never
// builds HTML from strings, parses no data and stores nothing.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-show-password]").forEach(function (box) {
    var input = document.getElementById(box.getAttribute("data-show-password"));
    if (!input) { return; }
    box.parentElement.hidden = false;
    box.addEventListener("change", function () {
      input.type = box.checked ? "text" : "password";
    });
    // Never submit a password field as text (password managers watch the type).
    if (input.form) {
      input.form.addEventListener("submit", function () { input.type = "password"; });
    }
  });
  document.querySelectorAll("[data-print]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () { window.print(); });
  });
});
