// Makes the vendored ipywidgets manager work from disk, with no network.
(function () {
  // The manager's modules find their icon fonts through their require.js module URLs,
  // which require.js resolves against the page. Point them at the vendored files in the
  // book's _static folder, where this script sits, so the fonts load on every page.
  var src = document.currentScript.src;
  var staticDir = src.slice(0, src.lastIndexOf("/") + 1);
  requirejs.config({
    paths: {
      "@jupyter-widgets": staticDir + "html-manager/dist",
      "@jupyter-widgets/html-manager/dist": staticDir + "html-manager/dist",
    },
  });

  // The manager typesets widget text with MathJax 2's `MathJax.Hub.Queue`; the book
  // loads MathJax 3 (deferred, so it exists by DOMContentLoaded, before widgets render
  // on load). Give MathJax 3 that one call.
  document.addEventListener("DOMContentLoaded", function () {
    var mathjax = window.MathJax;
    if (!mathjax || !mathjax.version || mathjax.Hub) return;
    mathjax.Hub = {
      Queue: function (job) {
        mathjax.startup.promise.then(function () {
          return mathjax.typesetPromise([job[2]]);
        });
      },
    };
  });
})();
