// The book's explorers, computed in the browser from data embedded in the page.
//
// `recutils.widgets` writes each explorer as an element holding its data (JSON in a
// <script type="application/json">) followed by this file and one call,
// `recutilsExplorer(element)`. The same output runs in the HTML book (no kernel, no
// network) and in a live notebook. This is the only implementation of the browser side.
//
// fusion: CombSUM of min-max normalised scores, or the softmax mixture, for a sample of
//   users, exactly as recutils.combine.ScoreFusion computes them: CombSUM in float32 (as
//   torch does), ties broken by the recommender's fixed random item order. Each user's
//   candidates are the items some weighting can rank in the top k, so the list is exact.
// neighbours: for a picked item, its precomputed nearest neighbours in each space.
function recutilsExplorer(root) {
  "use strict";
  if (!root || root.dataset.ready) return;
  root.dataset.ready = "1";
  var data = JSON.parse(root.querySelector("script.rx-data").textContent);
  var f32 = Math.fround;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function labelled(text, control) {
    return el("label", { class: "rx-control" }, [el("span", { text: text }), control]);
  }

  function select(name, options, value) {
    var node = el("select", { name: name });
    options.forEach(function (option) {
      var item = el("option", { value: String(option[0]), text: option[1] });
      if (option[0] === value) item.selected = true;
      node.appendChild(item);
    });
    return node;
  }

  function range(name, min, max, step, value) {
    return el("input", { type: "range", name: name, min: min, max: max, step: step, value: value });
  }

  function neighbours() {
    var picker = select("item", data.titles.map(function (t, i) { return [i, t]; }), data.initial);
    var panels = el("div", { class: "rx-panels" });
    function show() {
      var item = Number(picker.value);
      panels.textContent = "";
      data.spaces.forEach(function (space) {
        var list = el("ol", {}, space.neighbours[item].map(function (j) {
          return el("li", { "data-item": j, text: data.titles[j] });
        }));
        panels.appendChild(el("div", { class: "rx-panel", "data-space": space.name },
          [el("b", { text: space.name }), list]));
      });
    }
    picker.addEventListener("change", show);
    root.appendChild(el("div", { class: "rx-controls" }, [labelled("Item", picker)]));
    root.appendChild(panels);
    show();
  }

  // One user's fused scores over their candidates, or null when every weight is 0.
  function fuse(user, weights, method, tauIndex) {
    var active = [];
    weights.forEach(function (w, m) { if (w > 0) active.push(m); });
    if (!active.length) return null;
    var n = user.items.length, scores = new Array(n);
    if (method === "combsum") {
      for (var i = 0; i < n; i++) {
        var total = 0;
        active.forEach(function (m) { total = f32(total + f32(f32(weights[m]) * user.minmax[m][i])); });
        scores[i] = total;
      }
    } else {
      var tau = data.taus[tauIndex];
      var mix = function (values) {
        var terms = active.map(function (m) {
          return values[m] / tau - user.lse[m][tauIndex] + Math.log(weights[m]);
        });
        var top = Math.max.apply(null, terms);
        return top + Math.log(terms.reduce(function (s, t) { return s + Math.exp(t - top); }, 0));
      };
      for (var j = 0; j < n; j++) {
        scores[j] = mix(user.minmax.map(function (row, m) { return user.z_line[m][0] + user.z_line[m][1] * row[j]; }));
      }
    }
    var order = scores.map(function (_, i) { return i; });
    order.sort(function (a, b) { return scores[b] - scores[a] || user.tie[a] - user.tie[b]; });
    return order.slice(0, data.k).map(function (i) { return user.items[i]; });
  }

  function ndcg(items, relevant) {
    var dcg = 0, ideal = 0;
    items.forEach(function (item, r) {
      var discount = 1 / Math.log2(r + 2);
      if (relevant.indexOf(item) >= 0) dcg += discount;
      if (r < relevant.length) ideal += discount;
    });
    return dcg / ideal;
  }

  function fusion() {
    // The page stores the shortest decimals of float32 values: read them back as float32.
    data.users.forEach(function (user) {
      user.minmax = user.minmax.map(function (row) { return row.map(f32); });
    });
    var users = select("user", data.users.map(function (u, i) { return [i, "user " + u.id]; }), 0);
    var method = select("method", [["combsum", "CombSUM (min-max)"], ["mixture", "softmax mixture"]],
      "combsum");
    var tau = range("temperature", 0, data.taus.length - 1, 1, data.tau_index);
    var tauValue = el("output", { name: "temperature" });
    var sliders = data.models.map(function (name, m) {
      return range("weight", 0, 1, 0.05, data.weights[m]);
    });
    var values = sliders.map(function () { return el("output", {}); });
    var result = el("div", { class: "rx-result" });
    var controls = el("div", { class: "rx-controls" }, [
      labelled("user", users), labelled("method", method),
      el("label", { class: "rx-control" }, [el("span", { text: "τ (mixture)" }), tau, tauValue]),
    ].concat(data.models.map(function (name, m) {
      return el("label", { class: "rx-control", title: name }, [el("span", { text: name }), sliders[m], values[m]]);
    })));

    function show() {
      var user = data.users[Number(users.value)];
      var weights = sliders.map(function (s) { return Number(s.value); });
      values.forEach(function (v, m) { v.textContent = weights[m].toFixed(2); });
      tauValue.textContent = String(data.taus[Number(tau.value)]);
      tau.disabled = method.value !== "mixture";
      result.textContent = "";
      var fused = fuse(user, weights, method.value, Number(tau.value));
      if (!fused) {
        result.appendChild(el("i", { text: "All weights are zero: give at least one model some weight." }));
        return;
      }
      var equal = fuse(user, data.models.map(function () { return 1; }), method.value, Number(tau.value));
      result.appendChild(el("b", { class: "rx-ndcg",
        text: "NDCG@" + data.k + " " + ndcg(fused, user.relevant).toFixed(3) }));
      result.appendChild(document.createTextNode(
        " (equal weights: " + ndcg(equal, user.relevant).toFixed(3) + ")"));
      result.appendChild(el("ol", {}, fused.map(function (item) {
        var hit = user.relevant.indexOf(item) >= 0;
        return el("li", { "data-item": item, class: hit ? "rx-hit" : "" },
          [document.createTextNode((hit ? "✔ " : "") + data.titles[item])]);
      })));
    }
    [users, method, tau].concat(sliders).forEach(function (control) {
      control.addEventListener("input", show);
      control.addEventListener("change", show);
    });
    root.appendChild(controls);
    root.appendChild(result);
    show();
  }

  if (data.kind === "fusion") fusion();
  else if (data.kind === "neighbours") neighbours();
}
