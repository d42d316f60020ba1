// The import page follows a background check or import: it polls the job's
// progress and reloads the page once, when the job has finished.
(function () {
  "use strict";
  var job = document.getElementById("import-job");
  if (!job || !document.getElementById("import-progress-bar")) {
    return;
  }
  var url = job.dataset.progressUrl;
  var format = new Intl.NumberFormat("en-US");

  function show(progress) {
    document.getElementById("import-progress-bar").value = progress.percent;
    document.getElementById("import-progress-percent").textContent = progress.percent + "%";
    document.getElementById("import-status-label").textContent = progress.status_label;
    Object.keys(progress.counts || {}).forEach(function (kind) {
      var cell = document.querySelector('#import-counts [data-count="' + kind + '"]');
      if (cell) {
        cell.textContent = format.format(progress.counts[kind]);
      }
    });
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (progress) {
        show(progress);
        if (progress.finished || progress.status !== job.dataset.status) {
          window.location.reload();
        } else {
          window.setTimeout(poll, 1000);
        }
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }

  window.setTimeout(poll, 1000);
})();
