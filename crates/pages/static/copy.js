// Copy buttons on the kubeconfig page: progressive enhancement, the page works without it.
document.querySelectorAll("button.kg-copy").forEach(function (button) {
  var target = document.getElementById(button.dataset.copy);
  if (!target || !navigator.clipboard) return;
  var label = button.textContent;
  button.hidden = false;
  button.addEventListener("click", function () {
    navigator.clipboard.writeText(target.textContent).then(function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    });
  });
});
