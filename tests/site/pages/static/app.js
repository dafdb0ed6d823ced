// Builds part of the article at run time, so captures can tell whether JavaScript ran.
document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("live-update");
  var p = document.createElement("p");
  p.className = "js-rendered";
  p.textContent = "Rendered by JavaScript 7f3a: the trust confirmed this morning that the keepers' " +
    "logbooks will go on public display in the harbour office from next week.";
  box.appendChild(p);
});
