/* The overview page (/): polls GET /api/overview every 2 s and draws its figures on <canvas>, locally (no library,
   nothing from another origin). Every field of the JSON may be absent: what is missing is shown as "—". */
(function () {
  "use strict";
  var root = document.getElementById("overview");
  if (!root) { return; }
  var en = root.getAttribute("data-lang") === "en";
  var api = root.getAttribute("data-api") || "/api/overview";
  var interval = parseInt(root.getAttribute("data-interval") || "2000", 10);
  function t(zh, e) { return en ? e : zh; }

  var LABELS = {
    received: ["已接收", "received"], accepted: ["已受理", "accepted"], rejected: ["已拒收", "rejected"],
    delivered: ["已投递", "delivered"], quarantined: ["已隔离", "quarantined"], dead: ["死信", "dead letters"],
    dead_letters: ["死信", "dead letters"], quarantine_pending: ["待审隔离", "quarantine pending"],
    messages: ["报文", "messages"], published: ["已发布", "published"], errors: ["错误", "errors"]
  };
  function label(key) { var l = LABELS[key]; return l ? t(l[0], l[1]) : key.replace(/_/g, " "); }

  var samples = [];   // {at: ms, received: n, rate: n|null, p50, p99}
  var MAX = 90;

  function num(v) { return typeof v === "number" && isFinite(v) ? v : null; }
  function fmt(v) { var n = num(v); if (n === null) { return "—"; } return Math.abs(n) >= 100 || n === Math.round(n) ? String(Math.round(n)) : n.toFixed(1); }

  function entries(obj, nameKey, valueKey) {
    // {name: value} or [{name, value}] → [[name, value]]
    var out = [];
    if (Array.isArray(obj)) {
      obj.forEach(function (x) { if (x && typeof x === "object") { out.push([String(x[nameKey] || x.name || x.queue || x.code || "?"), num(x[valueKey] !== undefined ? x[valueKey] : (x.messages !== undefined ? x.messages : (x.count !== undefined ? x.count : x.depth)))]); } });
    } else if (obj && typeof obj === "object") {
      Object.keys(obj).forEach(function (k) { var v = obj[k]; out.push([k, num(typeof v === "object" && v !== null ? (v.messages !== undefined ? v.messages : (v.count !== undefined ? v.count : v.depth)) : v)]); });
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------- drawing
  function canvas(id) {
    var c = document.getElementById(id);
    if (!c) { return null; }
    var ctx = c.getContext("2d");
    ctx.clearRect(0, 0, c.width, c.height);
    ctx.font = "12px sans-serif";
    return { c: c, ctx: ctx, w: c.width, h: c.height };
  }
  function empty(k, text) {
    k.ctx.fillStyle = "#667085";
    k.ctx.fillText(text || t("暂无数据", "no data yet"), 12, k.h / 2);
  }
  function lines(id, series, colours, names) {
    var k = canvas(id); if (!k) { return; }
    var pad = { l: 44, r: 10, t: 18, b: 20 };
    var max = 0, n = 0;
    series.forEach(function (s) { s.forEach(function (v) { if (v !== null && v > max) { max = v; } }); n = Math.max(n, s.length); });
    if (n < 2) { empty(k); return; }
    if (max <= 0) { max = 1; }
    max = niceMax(max);
    var ctx = k.ctx, pw = k.w - pad.l - pad.r, ph = k.h - pad.t - pad.b;
    grid(k, pad, max);
    series.forEach(function (s, i) {
      ctx.strokeStyle = colours[i]; ctx.lineWidth = 2; ctx.beginPath();
      var started = false;
      s.forEach(function (v, j) {
        if (v === null) { started = false; return; }
        var x = pad.l + (pw * j) / (MAX - 1), y = pad.t + ph - (ph * v) / max;
        if (started) { ctx.lineTo(x, y); } else { ctx.moveTo(x, y); started = true; }
      });
      ctx.stroke();
      ctx.fillStyle = colours[i];
      ctx.fillText(names[i] + " " + fmt(lastOf(s)), pad.l + 8 + i * 120, 12);
    });
  }
  function lastOf(s) { for (var i = s.length - 1; i >= 0; i--) { if (s[i] !== null) { return s[i]; } } return null; }
  function niceMax(v) { var p = Math.pow(10, Math.floor(Math.log10(v))); var m = v / p; return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p; }
  function grid(k, pad, max) {
    var ctx = k.ctx, ph = k.h - pad.t - pad.b;
    ctx.strokeStyle = "#e4e9e4"; ctx.fillStyle = "#667085"; ctx.lineWidth = 1;
    for (var i = 0; i <= 4; i++) {
      var y = pad.t + (ph * i) / 4;
      ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(k.w - pad.r, y); ctx.stroke();
      ctx.fillText(fmt(max - (max * i) / 4), 4, y + 4);
    }
  }
  function bars(id, pairs, colour) {
    var k = canvas(id); if (!k) { return; }
    pairs = pairs.filter(function (p) { return p[1] !== null; }).sort(function (a, b) { return b[1] - a[1]; }).slice(0, 10);
    if (!pairs.length) { empty(k, t("无", "none")); return; }
    var ctx = k.ctx, left = 230, rowH = Math.min(24, (k.h - 8) / pairs.length);
    var max = Math.max.apply(null, pairs.map(function (p) { return p[1]; })) || 1;
    pairs.forEach(function (p, i) {
      var y = 4 + i * rowH, w = ((k.w - left - 60) * p[1]) / max;
      ctx.fillStyle = "#1d2433"; ctx.fillText(p[0].length > 34 ? p[0].slice(0, 33) + "…" : p[0], 4, y + rowH * 0.7);
      ctx.fillStyle = colour; ctx.fillRect(left, y + 3, Math.max(w, p[1] > 0 ? 2 : 0), rowH - 6);
      ctx.fillStyle = "#1d2433"; ctx.fillText(fmt(p[1]), left + w + 6, y + rowH * 0.7);
    });
  }

  // -------------------------------------------------------------------------------------------- tables
  function cell(tr, text, cls) { var td = document.createElement("td"); td.textContent = text; if (cls) { td.className = cls; } tr.appendChild(td); return td; }
  function badge(td, ok, text) {
    var s = document.createElement("span");
    s.className = "badge " + (ok === true ? "good" : ok === false ? "bad" : ok === "warn" ? "warn" : "none");
    s.textContent = text || (ok === true ? t("正常", "ok") : ok === false ? t("异常", "down") : ok === "warn" ? t("注意", "warning") : t("未知", "unknown"));
    td.textContent = ""; td.appendChild(s);
  }
  function table(id, rows) {
    // rows: [name, ok (true|false|"warn"|null), badge text or null, detail]
    var tb = document.querySelector("#" + id + " tbody"); if (!tb) { return; }
    tb.textContent = "";
    if (!rows.length) { rows = [["—", null, null, ""]]; }
    rows.forEach(function (r) {
      var tr = document.createElement("tr"); tr.setAttribute("data-item", r[0]);
      cell(tr, r[0]); badge(cell(tr, ""), r[1], r[2]); cell(tr, r[3] || ""); tb.appendChild(tr);
    });
  }
  var CHECKS = { rabbitmq: "RabbitMQ", postgresql: "PostgreSQL", crl: t("吊销列表", "CRL"), workers: t("工作进程", "workers") };
  var STATES = {
    ok: [true, t("正常", "ok")], degraded: ["warn", t("降级", "degraded")], down: [false, t("停止", "down")],
    up: [true, t("运行", "up")], absent: [null, t("未启用", "not running")],
    connected: [true, t("已连接", "connected")], disconnected: [null, t("未连接", "disconnected")],
    polling: [true, t("间歇轮询", "polls from time to time")]
  };
  // How long ago, for a person: "40 秒前", "12 分钟前", "3 小时前", "2 天前".
  function ago(seconds) {
    var n = num(seconds); if (n === null) { return ""; }
    if (n < 90) { return Math.round(n) + t(" 秒前", " s ago"); }
    if (n < 5400) { return Math.round(n / 60) + t(" 分钟前", " min ago"); }
    if (n < 172800) { return Math.round(n / 3600) + t(" 小时前", " h ago"); }
    return Math.round(n / 86400) + t(" 天前", " days ago");
  }
  function state(s) { return STATES[s] || [null, s || t("未知", "unknown")]; }

  function healthRows(d) {
    var rows = [];
    (Array.isArray(d.checks) ? d.checks : []).forEach(function (c) {
      if (!c || c.name === "workers") { return; }
      rows.push([CHECKS[c.name] || c.name, c.ok === true, null, c.ok ? "" : [c.code, c.message].filter(Boolean).join(" ")]);
    });
    if (d.workers && typeof d.workers === "object") {
      var w = state(d.workers.state), procs = Array.isArray(d.workers.processes) ? d.workers.processes : [];
      var fresh = procs.filter(function (p) { return p && p.fresh; }).length;
      rows.push([t("工作进程", "Workers"), w[0], w[1],
        t("进程 ", "processes ") + fresh + "/" + (d.workers.expected === null || d.workers.expected === undefined ? procs.length : d.workers.expected) +
        (d.workers.consumers !== null && d.workers.consumers !== undefined ? t(" · 消费者 ", " · consumers ") + d.workers.consumers : "") +
        // other machines' live workers, from their rows in the store (hub.store.process_instances)
        (Array.isArray(d.workers.elsewhere) && d.workers.elsewhere.length ? t(" · 其他主机：", " · other hosts: ") +
          d.workers.elsewhere.slice(0, 6).map(function (h) { return h.host + " " + h.workers; }).join(", ") : "")]);
    }
    if (d.gateway && typeof d.gateway === "object") {
      var g = state(d.gateway.state), req = d.gateway.requests || {}, n = 0;
      Object.keys(req).forEach(function (k) { n += num(req[k]) || 0; });
      var refusals = Array.isArray(d.gateway.refusals) ? d.gateway.refusals.filter(function (r) { return r && typeof r === "object"; }) : [];
      // The totals of every group (the list holds the first 50 only: adding those up undercounted in an outage that
      // refuses everybody, stale CRLs say); from an older server, the list's own sum.
      var refusedHour = num(d.gateway.refused_hour), groups = num(d.gateway.refusal_groups);
      if (refusedHour === null) { refusedHour = 0; refusals.forEach(function (r) { refusedHour += num(r.hour) || 0; }); }
      if (groups === null || groups < refusals.length) { groups = refusals.length; }
      // Every gateway process as the store knows it (hub.store.gateway_activity: any machine); one that stopped
      // refreshing its row died (a clean stop removes it).
      var gws = Array.isArray(d.gateway.instances) ? d.gateway.instances.filter(function (i) { return i && typeof i === "object"; }) : [];
      var live = gws.filter(function (i) { return i.alive; }), dead = gws.filter(function (i) { return !i.alive; });
      // A gateway that is up but fails its GET /ready checks (hub.gateway.readiness) gets no clients from the load
      // balancer: named with why.
      var sick = live.filter(function (i) { return Array.isArray(i.not_ready) && i.not_ready.length; });
      // A gateway presenting a server certificate that expires within 30 days (a renewal on disk that did not load
      // leaves the old one in use: hub.gateway.tls), named with its days left.
      var expiring = live.filter(function (i) { return i.certificate && typeof i.certificate === "object" && i.certificate.expiring; });
      var where = (live.length ? t("网关进程 ", "gateway processes ") + live.length + t("：", ": ") +
        live.slice(0, 4).map(function (i) { return i.host + " (pid " + i.pid + ")"; }).join(", ") + " · " : "") +
        (sick.length ? t("未就绪：", "not ready: ") + sick.slice(0, 4).map(function (i) {
          return i.host + " (pid " + i.pid + t("，", ", ") + i.not_ready.map(function (c) { return c && (c.title || c.code); }).join(t("；", "; ")) + ")"; }).join(", ") + " · " : "") +
        (expiring.length ? t("服务器证书将到期：", "server certificate expiring: ") + expiring.slice(0, 4).map(function (i) {
          var days = num(i.certificate.days);
          return i.host + " (pid " + i.pid + t("，", ", ") + (days === null ? "?" : days < 0 ? t("已过期", "expired") :
            days + t(" 天后到期", " days left")) + ")"; }).join(", ") + " · " : "") +
        (dead.length ? t("无响应：", "not responding: ") + dead.slice(0, 4).map(function (i) {
          return i.host + " (pid " + i.pid + t("，", ", ") + ago(i.seen_s) + t("最后一次刷新", " last seen") + ")"; }).join(", ") + " · " : "");
      // The request counts and p99 come from this host's metrics files (hub run --gateway): "本机".
      rows.push([t("HTTPS 网关", "HTTPS gateway"), g[0], g[1], where +
        (num(d.gateway.requests_hour) !== null ? t("近 1 小时各网关请求 ", "requests through every gateway in the last hour: ") + d.gateway.requests_hour + " · " : "") +
        t("本机请求 ", "requests on this host ") + n + (num(d.gateway.p99_ms) !== null ? " · p99 " + fmt(d.gateway.p99_ms) + " ms" : "") +
        (refusedHour ? t(" · 近 1 小时网关拒绝 ", " · refused by the gateways in the last hour: ") + refusedHour : "")]);
      // Every gateway's own refusals of the last hour by system (hub.store.gateway_activity), the recent ones first:
      // who cannot get in and why — a revoked certificate, a system missing from the directory, a limit, no
      // certificate at all. Recent (this minute and the one before) is a warning; the rest of the hour is shown plain.
      // A failed TLS handshake (TLS_*) names no system: nothing of a certificate that did not verify is trusted, and
      // the clients' addresses are the clue to who it is. Plain HTTP, an old TLS version, garbage on the port or a
      // handshake never finished is what scanners send too: listed, never a warning.
      refusals.slice(0, 8).forEach(function (r) {
        var recent = num(r.recent) || 0, code = String(r.code || ""), tls = code.indexOf("TLS_") === 0;
        var peers = Array.isArray(r.peers) ? r.peers.filter(function (a) { return typeof a === "string" && a; }) : [];

        var who = r.system !== "-" ? r.system : tls ? t("TLS 握手（系统未识别）", "TLS handshakes (no system known)") :
          t("无证书的客户端", "clients without a certificate");
        rows.push([t("网关拒绝 ", "gateway refused ") + who,
          recent && !/^TLS_(PLAIN_HTTP|PROTOCOL|HANDSHAKE_FAILED|HANDSHAKE_TIMEOUT)$/.test(code) ? "warn" : null, code,
          (r.title || r.code) + "：" + (recent ? t("近 2 分钟 ", "last 2 min: ") + recent + t(" 次，", ", ") : "") +
          t("近 1 小时 ", "last hour: ") + (num(r.hour) || 0) + t(" 次", "") +
          (r.last && !isNaN(Date.parse(r.last)) ? t("，最近一次 ", ", latest ") +
            new Date(r.last).toLocaleTimeString(en ? "en-GB" : "zh-CN", { hour: "2-digit", minute: "2-digit" }) : "") +
          (peers.length ? t("，来自 ", ", from ") + peers.join(t("、", ", ")) +
            (r.more_peers === true ? t(" 等更多地址", " and more") : "") : "")]);
      });
      if (groups > 8) {
        rows.push([t("网关拒绝", "gateway refused"), null, "…", t("另有 ", "and ") + (groups - 8) + t(" 项", " more")]);
      }
    }
    if (d.processes && typeof d.processes === "object") {
      var pe = state(d.processes.state), alarms = num(d.processes.alarms);
      // Where it runs, from each engine's row in the store (hub.store.process_instances: any machine); one that
      // stopped refreshing its row is named with when it was last seen.
      var engines = Array.isArray(d.processes.instances) ? d.processes.instances.filter(function (i) { return i && typeof i === "object"; }) : [];
      var running = engines.filter(function (i) { return i.alive; }), gone = engines.filter(function (i) { return !i.alive; });
      var at = (running.length ? t("运行于 ", "running on ") + running.slice(0, 4).map(function (i) { return i.host + " (pid " + i.pid + ")"; }).join(", ") + " · " : "") +
        (gone.length && !running.length ? t("无响应：", "not responding: ") + gone.slice(0, 4).map(function (i) {
          return i.host + " (pid " + i.pid + t("，", ", ") + ago(i.seen_s) + t("最后一次刷新", " last seen") + ")"; }).join(", ") + " · " : "");
      rows.push([t("流程引擎", "Process engine"), alarms ? "warn" : pe[0], pe[1], at +
        (alarms === null ? "" : alarms ? t("未解除告警 ", "open alarms ") + alarms + t("（见“流程告警”）", " (see Process alarms)") : t("无未解除告警", "no open alarms"))]);
    }
    if (d.directory && typeof d.directory === "object") {
      rows.push(directoryRow(d.directory));
    }
    if (Array.isArray(d.adapters)) {
      // "polling": nobody reads its queue at this moment, but it polled through the HTTPS gateway lately (the gateway
      // lets an idle system's queue go between its polls: monitoring.metrics.adapter_state).
      var on = d.adapters.filter(function (a) { return a && (a.state === "connected" || a.state === "polling"); });
      var off = d.adapters.filter(function (a) { return a && a.state !== "connected" && a.state !== "polling"; }).map(function (a) {
        return a.system + (num(a.last_poll_s) !== null ? t("（上次轮询 ", " (last polled ") + ago(a.last_poll_s) + t("）", ")") : "");
      });
      rows.push([t("适配器", "Adapters"), !d.adapters.length ? null : off.length ? "warn" : true,
        on.length + "/" + d.adapters.length + t(" 已连接", " connected"),
        off.length ? t("未连接：", "not connected: ") + off.slice(0, 8).join(", ") + (off.length > 8 ? " …" : "") : ""]);
      on.forEach(function (a) {
        if (a.state === "polling") {
          rows.push([t("适配器 ", "adapter ") + a.system, true, state("polling")[1] + " · " + LINKS.gateway,
            t("上次轮询 ", "last polled ") + ago(a.last_poll_s) + t("，两次轮询之间网关不占用其队列 · ", "; between polls the gateway leaves its queue · ") +
            t("待取 ", "ready ") + (a.ready || 0) + t(" · 处理中 ", " · unacked ") + (a.unacked || 0) + viaGateway(a)]);
          return;
        }
        // Who reads the queue (monitoring.metrics.link_of): the system over RabbitMQ, the HTTPS gateway for it, or
        // both at once (the gateway gives the queue up: hub.gateway.links).
        var link = LINKS[a.link] || "";
        rows.push([t("适配器 ", "adapter ") + a.system, a.link === "both" ? "warn" : true,
          t("已连接", "connected") + (link ? " · " + link : ""),
          (a.link === "both" ? t("AMQP 与 HTTPS 网关同时读取，网关将让出队列 · ",
            "read over AMQP and by the HTTPS gateway at once; the gateway gives the queue up · ") : "") +
          t("待取 ", "ready ") + (a.ready || 0) + t(" · 处理中 ", " · unacked ") + (a.unacked || 0) + viaGateway(a)]);
      });
    }
    return rows;
  }
  // A system's requests through the HTTPS gateways in the last hour (hub.store.gateway_activity: every gateway, any
  // machine): when a bureau says it cannot send, whether anything of it arrived at all.
  function viaGateway(a) {
    var g = a.gateway_requests;
    if (!g || typeof g !== "object" || num(g.hour) === null) { return ""; }
    return t(" · 近 1 小时经网关请求 ", " · requests through the gateways in the last hour: ") + g.hour +
      (num(g.recent) ? t("（近 2 分钟 ", " (last 2 min: ") + g.recent + t("）", ")") : "");
  }
  // Has every process of hub run taken the directory hub directory load stored (monitoring.health.directory_state)?
  function directoryRow(dv) {
    var procs = Array.isArray(dv.processes) ? dv.processes : [];
    var late = procs.filter(function (p) { return p && !p.current; }).map(function (p) {
      return (NAMES[p.role] || p.role) + " " + p.index + t("（", " (") + (p.host ? p.host + " " : "") + "pid " + p.pid + t("，第 ", ", version ") + p.version + t(" 版）", ")");
    });
    var v = num(dv.stored), version = v === null ? "" : t("第 ", "version ") + v + t(" 版", "");
    var every = t("每 ", "each looks every ") + (num(dv.refresh_s) === null ? "?" : dv.refresh_s) + t(" 秒查看一次", " s");
    var lateList = late.slice(0, 6).join(", ") + (late.length > 6 ? " …" : "");
    if (dv.state === "ok") {
      return [t("目录", "Directory"), true, version, procs.length + t(" 个进程均已采用", " processes all work with it") +
        (dv.loaded_at ? t("（载入于 ", " (loaded ") + dv.loaded_at + t("）", ")") : "")];
    }
    if (dv.state === "following") {
      return [t("目录", "Directory"), "warn", t("采用中 ", "being taken: ") + version,
        t("仍在旧版本：", "still on an older version: ") + lateList + t("（", " (") + every + t("）", ")")];
    }
    if (dv.state === "behind") {
      return [t("目录", "Directory"), false, t("未采用 ", "not taken: ") + version,
        t("两次查看后仍在旧版本：", "still on an older version after two looks: ") + lateList +
        t("。查看 hub run 的日志（could not take the new directory）和“流程告警”", ". See hub run's log (could not take the new directory) and the process alarms")];
    }
    if (dv.state === "absent") {
      return [t("目录", "Directory"), null, version || t("未载入", "none stored"), t("没有运行中的进程报告所用的目录版本", "no running process reports its directory version")];
    }
    return [t("目录", "Directory"), null, null, t("数据库中读不到已载入的目录（见 PostgreSQL 一行）", "no stored directory can be read (see the PostgreSQL row)")];
  }
  var NAMES = { worker: t("工作进程", "worker"), gateway: t("网关审验", "gateway examination"), processes: t("流程引擎", "process engine") };
  var LINKS = { amqp: t("经 AMQP", "over AMQP"), gateway: t("经 HTTPS 网关", "over the HTTPS gateway"),
    both: t("链路冲突", "both links") };
  function certRows(d) {
    var rows = [], c = d.certificates || {};
    (Array.isArray(c.crls) ? c.crls : []).forEach(function (x) {
      rows.push([t("吊销列表 ", "CRL ") + (x.subject || x.serial || ""), x.fresh === true ? true : x.fresh === false ? false : null,
        x.fresh ? t("有效", "fresh") : t("过期", "stale"),
        t("下次更新 ", "next update ") + (x.next_update || "—") + (num(x.hours_left) !== null ? t("（剩 ", " (") + fmt(x.hours_left) + t(" 小时）", " h left)") : "")]);
    });
    var exp = Array.isArray(c.expiring) ? c.expiring : [];
    exp.forEach(function (x) {
      rows.push([t("证书 ", "certificate ") + (x.system ? x.agency + "/" + x.system : x.subject || x.serial), num(x.days_left) !== null && x.days_left <= 0 ? false : "warn",
        (num(x.days_left) !== null ? fmt(x.days_left) : "?") + t(" 天后到期", " days left"), (x.kind || "") + " " + (x.serial || "") + " · " + (x.not_after || "")]);
    });
    if (d.certificates && !exp.length) { rows.push([t("证书", "Certificates"), true, t("30 天内无到期", "none expiring in 30 days"), ""]); }
    return rows;
  }

  // -------------------------------------------------------------------------------------------- one poll
  var TILES = [
    ["accepted", "已受理", "accepted"], ["rejected", "已拒收", "rejected"], ["quarantined", "已隔离", "quarantined"],
    ["duplicate", "重复", "duplicates"], ["deliveries", "已投递", "deliveries"], ["deferred", "暂缓重试", "deferred"]
  ];
  function update(d) {
    var now = Date.now();
    var m = d.messages && typeof d.messages === "object" ? d.messages : {};
    var total = m.total && typeof m.total === "object" ? m.total : (d.totals || {});
    var values = {};
    Object.keys(total).forEach(function (k) { values[k] = total[k]; });
    if (d.deliveries && typeof d.deliveries === "object") { values.deliveries = d.deliveries.total; }
    if (m.deferred !== undefined) { values.deferred = m.deferred; }
    var tiles = document.getElementById("totals");
    tiles.textContent = "";
    var known = TILES.map(function (x) { return x[0]; });
    var keys = known.filter(function (k) { return values[k] !== undefined; })
      .concat(Object.keys(values).filter(function (k) { return known.indexOf(k) < 0; }));
    keys.forEach(function (k) {
      var spec = TILES.filter(function (x) { return x[0] === k; })[0];
      var div = document.createElement("div"); div.className = "tile"; div.setAttribute("data-key", k);
      var l = document.createElement("div"); l.className = "label"; l.textContent = spec ? t(spec[1], spec[2]) : label(k);
      var v = document.createElement("div"); v.className = "value"; v.textContent = fmt(num(values[k]));
      div.appendChild(l); div.appendChild(v); tiles.appendChild(div);
    });
    var sum = 0, any = false;
    Object.keys(total).forEach(function (k) { if (num(total[k]) !== null) { sum += total[k]; any = true; } });
    var rate = num(m.per_minute);
    var prev = samples.length ? samples[samples.length - 1] : null;
    if (rate === null && prev && prev.received !== null && any && now > prev.at) {
      rate = Math.max(0, ((sum - prev.received) * 60000) / (now - prev.at));
    }
    var lat = d.latency_ms || {};
    samples.push({ at: now, received: any ? sum : null, rate: rate, p50: num(lat.p50), p99: num(lat.p99) });
    if (samples.length > MAX) { samples.shift(); }
    lines("chart-rate", [samples.map(function (s) { return s.rate; })], ["#2e7d32"], [t("每分钟", "per minute")]);
    lines("chart-latency", [samples.map(function (s) { return s.p50; }), samples.map(function (s) { return s.p99; })],
      ["#1f5fa8", "#b26a00"], ["p50", "p99"]);
    var rej = d.rejections && typeof d.rejections === "object" ? (d.rejections.total || d.rejections) : {};
    bars("chart-rejections", entries(rej, "code", "count"), "#b42318");
    var queues = Array.isArray(d.queues) ? d.queues.map(function (q) {
      return [q.name + (q.role && q.role !== "system" ? " (" + q.role + ")" : ""), (num(q.ready) || 0) + (num(q.unacked) || 0), q.role];
    }) : entries(d.queues, "name", "messages");
    // the busiest queues, and the hub's own (inbound, retry, dead, quarantine) even when empty (not the eight
    // where recipients' put-off deliveries wait: those when they hold some); without the namespace that every
    // name starts with
    queues = queues.filter(function (q) { return q[1] > 0 || (q[2] && q[2] !== "system" && q[2] !== "later"); });
    var prefix = queues.length > 1 ? queues.reduce(function (p, q) { while (q[0].indexOf(p) !== 0) { p = p.slice(0, -1); } return p; }, queues[0][0]) : "";
    prefix = prefix.slice(0, prefix.lastIndexOf(".") + 1);
    queues = queues.map(function (q) { return [q[0].slice(prefix.length), q[1], q[2]]; });
    bars("chart-queues", queues, "#1f5fa8");
    table("health", healthRows(d));
    table("certs", certRows(d));
    var st = document.getElementById("api-state");
    st.textContent = d.ready === false ? t("枢纽未就绪：见下方运行状态。", "The hub is not ready: see Health below.") : "";
    st.className = d.ready === false ? "notice warn" : "notice";
    document.getElementById("updated").textContent = t("更新于 ", "updated ") + new Date(now).toLocaleTimeString(en ? "en-GB" : "zh-CN");
    root.setAttribute("data-polls", String((parseInt(root.getAttribute("data-polls") || "0", 10)) + 1));
  }

  function problem(text) {
    var state = document.getElementById("api-state");
    state.textContent = text; state.className = "notice warn";
  }

  function poll() {
    fetch(api, { credentials: "same-origin", headers: { "Accept": "application/json" }, cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { window.location.href = "/login?next=/"; return null; }
        if (r.status === 404) { problem(t("运行数据接口尚未启用（/api/overview）。", "The figures endpoint (/api/overview) is not available yet.")); return null; }
        if (!r.ok) { problem(t("读取运行数据失败：HTTP ", "Cannot read the figures: HTTP ") + r.status); return null; }
        return r.json();
      })
      .then(function (d) { if (d) { update(d); } })
      .catch(function () { problem(t("无法连接运维页面服务。", "Cannot reach the ops page's server.")); })
      .then(function () { window.setTimeout(poll, interval); });
  }
  poll();
})();
