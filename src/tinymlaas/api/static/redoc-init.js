// Starts ReDoc on /api/v1/redoc (a file, not an inline script: the page's
// Content-Security-Policy allows scripts from this origin only).
"use strict";

(function () {
  const root = document.getElementById("redoc");
  Redoc.init(root.dataset.openapiUrl, {}, root);
})();
