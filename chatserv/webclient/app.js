// The chatserv web client: plain DOM, no framework, served by chatserv itself.
//
// It speaks the JSON websocket protocol (docs/protocol.md, subprotocol chatserv.v1.json).
// Typed lines starting with "/" go to the server as {"type":"line"} requests, so every
// server command works here without a parser of our own.
//
// Security: everything the server sends is user-controlled text. The DOM is built with
// createElement and textContent only; nothing here assigns HTML. The server's
// Content-Security-Policy forbids inline script and style, so nothing here relies on them.
"use strict";

const SUBPROTOCOL = "chatserv.v1.json";
const ROOMS_REFRESH_MS = 15000;
const BACKOFF_FIRST_S = 1;
const BACKOFF_MAX_S = 30;
const MAX_LINES = 1000; // older lines are dropped so a long session stays fast
const COLOR = /^#[0-9a-f]{6}$/i;
// Hues for nicknames without a colour of their own: far enough apart to tell apart.
const NICK_HUES = [0, 25, 45, 90, 140, 170, 195, 215, 245, 275, 300, 330];
// Refusals of a message for its length (docs/protocol.md, "Errors").
const TOO_LONG = new Set(["message-too-long", "line-too-long"]);
const SHUTDOWN_NOTICE = "server shutting down";
// Instructions for terminal users that a web client answers with its own form.
const LINE_CLIENT_HINTS = new Set([
  "Welcome to chatserv! Type a nickname to begin, or /help.",
  "Choose a nickname: type it, or /nick NAME.",
]);

const $ = (id) => document.getElementById(id);

// Everything the client knows. The password lives here only, never in storage.
const state = {
  nick: null, // ours, as the server spells it
  password: null, // kept in memory to log in again after a reconnect
  pendingPassword: null, // from a typed /register, /login or /passwd, until it succeeds
  room: null, // the room we are in: plain messages go there, and its view is shown
  rejoin: null, // the room to return to after a reconnect
  home: null, // the server's default room: where a (re)connection's nickname puts us
  homeNext: false, // the next join of ours is into the default room (after a welcome)
  newest: new Map(), // folded room -> the newest message id seen there, sent as "since"
  chatting: false, // the chat screen is showing (we were welcomed at least once)
  welcomed: false, // this connection has a nickname
  ws: null,
  closeIntent: null, // "retry" or "abandon" when we close the socket ourselves
  lastNotice: null, // the server's last notice: its farewell if it then closes
  attempts: 0, // failed reconnects in a row, for the back-off
  retryAt: 0,
  retryTimer: null,
  countdownTimer: null,
  roomsTimer: null,
  quietRooms: 0, // our own periodic "rooms" requests, whose replies are not printed
  quietWho: false, // the "who" that follows our own join is not printed either
  earlyNotices: [], // notices before the welcome (the message of the day)
  rooms: new Map(), // folded name -> {name, users}
  users: [], // members of our room, in join order; empty while disconnected
  colors: new Map(), // folded nick -> {color, ts}: the newest colour known for it
  views: new Map(), // folded room name -> its view (see makeView)
  view: null, // the view on screen: the current room's, or the first one before a room
  history: null, // {view, count, shown} while a history replay arrives
  pmTo: null, // nickname the input sends private messages to
  sent: [], // typed lines, for Up/Down recall
  sentIndex: 0,
};

// -- small helpers ----------------------------------------------------------------------

// Nicknames and room names compare like IRC's rfc1459 mapping: [ ] \ ~ equal { } | ^.
function fold(name) {
  const map = { "[": "{", "]": "}", "\\": "|", "~": "^" };
  return name.toLowerCase().replace(/[[\]\\~]/g, (c) => map[c]);
}

function isMe(nick) {
  return state.nick !== null && nick !== null && fold(nick) === fold(state.nick);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function pad(n) {
  return String(n).padStart(2, "0");
}

function clockTime(date) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

// Old messages (history, kept private messages) carry their date too.
function timeElement(ms, withDate) {
  const date = new Date(ms);
  const node = element("time", "time");
  node.dateTime = date.toISOString();
  node.title = date.toLocaleString();
  let text = clockTime(date);
  if (withDate) {
    const options = { month: "short", day: "numeric" };
    if (date.getFullYear() !== new Date().getFullYear()) options.year = "numeric";
    text = `${date.toLocaleDateString(undefined, options)} ${text}`;
  }
  node.textContent = text;
  return node;
}

// One colour per person: every nickname on the page (in any view, the people list,
// private messages) is painted from state.colors, and repainted when that changes. The
// colour is the one the person's newest message carried, if it is a plain #rrggbb, else
// a hue picked by a hash of the name (FNV-1a), so everyone sees the same colour for the
// same person. The hue goes into a CSS variable: the stylesheet picks the lightness that
// reads well in light or dark mode.
function nickHue(key) {
  let hash = 0x811c9dc5;
  for (const c of key) hash = Math.imul(hash ^ c.codePointAt(0), 0x01000193) >>> 0;
  return NICK_HUES[hash % NICK_HUES.length];
}

function paintNick(node) {
  const color = state.colors.get(node.dataset.key)?.color;
  if (color) {
    node.classList.remove("auto-color");
    node.style.removeProperty("--nick-hue");
    node.style.color = color;
  } else {
    node.style.removeProperty("color");
    node.classList.add("auto-color");
    node.style.setProperty("--nick-hue", String(nickHue(node.dataset.key)));
  }
}

function nickElement(nick) {
  const node = element("span", "nick", nick);
  node.dataset.key = fold(nick);
  paintNick(node);
  return node;
}

// Remember the colour an event from NICK carried (none: the hue of the name). Older news
// (a replayed message, a kept private message) does not override newer. When a person's
// colour changes, their name changes colour everywhere on the page, old lines included.
function noteColor(nick, color, ts) {
  const key = fold(nick);
  const valid = typeof color === "string" && COLOR.test(color) ? color.toLowerCase() : undefined;
  const known = state.colors.get(key);
  const when = ts ?? Date.now();
  if (known && known.ts > when) return;
  state.colors.set(key, { color: valid, ts: when });
  if (known?.color === valid) return;
  for (const node of document.querySelectorAll(".nick")) {
    if (node.dataset.key === key) paintNick(node);
  }
}

// -- views: one message list per room -------------------------------------------------
//
// Each room we go to gets a view of its own: its lines (at most MAX_LINES), where it was
// scrolled to, and the messages it shows, so that a replayed history skips them. The
// room's messages, joins, leaves and history go to its view; what is not a room's
// (private messages, notices, replies to commands, errors) goes to the view on screen.
// Views stay when we leave a room: coming back shows what was there, and the server
// replays what was said meanwhile. All views are in the page, hidden but the one shown.

function makeView(room) {
  const list = element("ol", "messages");
  list.hidden = true;
  list.setAttribute("aria-live", "polite");
  const view = { room: null, list, seen: new Set(), follow: true, top: 0 };
  if (room !== null) nameView(view, room);
  else list.setAttribute("aria-label", "Messages");
  $("views").append(list);
  return view;
}

function nameView(view, room) {
  view.room = room;
  view.list.dataset.room = room;
  view.list.setAttribute("aria-label", `Messages in #${room}`);
  state.views.set(fold(room), view);
}

// The view of room NAME, made on our first join. The first view on the page (the welcome
// and the notices before any room) becomes the first room's.
function roomView(name) {
  const known = state.views.get(fold(name));
  if (known) return known;
  if (state.view.room === null) {
    nameView(state.view, name);
    return state.view;
  }
  return makeView(name);
}

// Where a line about room NAME goes: its view, or the one on screen.
function viewOf(name) {
  return (name && state.views.get(fold(name))) || state.view;
}

function showView(view) {
  const old = state.view;
  if (old === view) return;
  old.follow = nearBottom(old.list);
  old.top = old.list.scrollTop;
  old.list.hidden = true;
  view.list.hidden = false;
  view.list.scrollTop = view.follow ? view.list.scrollHeight : view.top;
  state.view = view;
}

function nearBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

// Append a line; follow the conversation unless the user has scrolled up to read.
function append(line, forceScroll, view = state.view) {
  const list = view.list;
  const onScreen = view === state.view;
  const follow = forceScroll || (onScreen ? nearBottom(list) : view.follow);
  list.append(line);
  while (list.childElementCount > MAX_LINES) {
    const first = list.firstElementChild;
    if (first.dataset.seen) view.seen.delete(first.dataset.seen);
    first.remove();
  }
  if (onScreen && follow) list.scrollTop = list.scrollHeight;
  else if (!onScreen) view.follow = follow;
}

function lineElement(kind, ts, withDate) {
  const line = element("li", `line line-${kind}`);
  line.dataset.kind = kind;
  line.append(timeElement(ts ?? Date.now(), withDate));
  return line;
}

// A line from the server rather than a person: notices, joins, errors, replies.
function systemLine(kind, text, ts, view = state.view) {
  const line = lineElement(kind, ts);
  line.classList.add("system");
  line.append(element("span", "text", text));
  append(line, false, view);
  return line;
}

function seenKey(event) {
  return `${event.id}:${event.ts}`;
}

// The divider before replayed messages appears only once one is new to the view.
function showHistoryStart() {
  const replay = state.history;
  if (!replay || replay.shown) return;
  replay.shown = true;
  const line = element("li", "divider", `earlier in #${replay.view.room}`);
  line.dataset.kind = "history-start";
  append(line, false, replay.view);
}

function roomMessage(event) {
  const view = viewOf(event.room);
  const key = seenKey(event);
  const room = fold(event.room);
  if (Number.isInteger(event.id) && !(state.newest.get(room) >= event.id)) {
    state.newest.set(room, event.id);
  }
  // A replayed message the view shows already (history again after a rejoin) is skipped.
  if (event.history && view.seen.has(key)) return;
  view.seen.add(key);
  if (event.history) showHistoryStart();
  noteColor(event.from, event.color, event.ts);
  const line = lineElement(event.type, event.ts, event.history);
  line.dataset.from = event.from;
  line.dataset.id = String(event.id);
  line.dataset.seen = key;
  if (event.history) line.classList.add("history");
  if (isMe(event.from)) line.classList.add("mine");
  const body = element("span", "body");
  if (event.type === "action") {
    body.append("* ", nickElement(event.from), " ", element("span", "text", event.text));
  } else {
    body.append(nickElement(event.from), element("span", "text", event.text));
  }
  line.append(body);
  append(line, isMe(event.from) && !event.history, view);
}

// Private messages belong to no room: they go to the view on screen. One kept for us and
// delivered again at a later login is not shown twice, whichever view has it.
function privateMessage(event) {
  const key = seenKey(event);
  if (event.offline && [...state.views.values(), state.view].some((v) => v.seen.has(key))) {
    return;
  }
  state.view.seen.add(key);
  noteColor(event.from, event.color, event.ts);
  const outgoing = isMe(event.from) && !isMe(event.to);
  const line = lineElement("msg", event.ts, event.offline && !outgoing);
  line.dataset.seen = key;
  line.dataset.from = event.from;
  line.dataset.to = event.to;
  line.dataset.direction = outgoing ? "out" : "in";
  const body = element("span", "body");
  const label = element("span", "pm-label");
  if (outgoing) {
    label.append("you → ", nickElement(event.to));
  } else {
    label.append(nickElement(event.from), " → you");
    // Replying is one click: the sender becomes the private-message target.
    label.addEventListener("click", () => setPmTarget(event.from));
    label.classList.add("clickable");
  }
  body.append(label, element("span", "text", event.text));
  if (event.offline) {
    const note = outgoing ? "kept for their next login" : "sent while you were away";
    body.append(element("span", "tag", note));
  }
  line.append(body);
  append(line, outgoing);
}

// -- rooms and people -------------------------------------------------------------------

function setRoomCount(name, users) {
  state.rooms.set(fold(name), { name, users: Math.max(0, users) });
  renderRooms();
}

function adjustRoomCount(name, delta) {
  const room = state.rooms.get(fold(name));
  setRoomCount(room ? room.name : name, (room ? room.users ?? 0 : 0) + delta);
}

function renderRooms() {
  const list = $("room-list");
  const rooms = [...state.rooms.values()].sort((a, b) =>
    a.name.toLowerCase().localeCompare(b.name.toLowerCase()));
  list.replaceChildren(...rooms.map((room) => {
    const button = element("button", "room-button");
    button.type = "button";
    button.dataset.room = room.name;
    const current = state.room !== null && fold(room.name) === fold(state.room);
    if (current) button.setAttribute("aria-current", "true");
    // While disconnected the counts are unknown: none is shown.
    button.append(element("span", "room-label", `#${room.name}`),
      element("span", "count", room.users === null ? "" : String(room.users)));
    button.addEventListener("click", () => joinRoom(room.name));
    const item = element("li");
    item.append(button);
    return item;
  }));
}

function renderUsers() {
  const list = $("user-list");
  $("user-count").textContent = state.users.length ? String(state.users.length) : "";
  $("people-offline").hidden = state.welcomed;
  $("people-hint").hidden = !state.welcomed;
  list.replaceChildren(...state.users.map((nick) => {
    const button = element("button", "user-button");
    button.type = "button";
    button.dataset.nick = nick;
    button.append(nickElement(nick));
    if (isMe(nick)) {
      button.append(element("span", "tag", "you"));
      button.disabled = true;
    } else {
      button.title = `Send ${nick} a private message`;
      button.addEventListener("click", () => setPmTarget(nick));
    }
    const item = element("li");
    item.append(button);
    return item;
  }));
}

function setTopic(room, topic) {
  if (state.room === null || fold(room) !== fold(state.room)) return;
  $("room-topic").textContent = topic ?? "";
}

function showRoom() {
  $("room-name").textContent = state.room ? `#${state.room}` : "";
  $("input").placeholder = state.pmTo
    ? `Private message to ${state.pmTo}`
    : `Message #${state.room ?? ""}`;
  document.title = state.room ? `#${state.room} · chatserv` : "chatserv";
  renderRooms();
}

function joinRoom(name) {
  closePanels();
  const room = name.trim().replace(/^#/, "");
  if (!room) return;
  if (state.room !== null && fold(room) === fold(state.room)) return;
  send(withSince({ type: "join", room }, room));
}

// "since": the newest message of the room we have seen, so that the server replays only
// what came after it (after a reconnect, nothing at all if nothing was said meanwhile).
function withSince(request, room) {
  const since = room !== null ? state.newest.get(fold(room)) : undefined;
  return since === undefined ? request : { ...request, since };
}

function setPmTarget(nick) {
  state.pmTo = nick;
  $("pm-nick").textContent = nick ?? "";
  $("pm-target").hidden = nick === null;
  closePanels();
  showRoom();
  $("input").focus();
}

// -- events from the server -------------------------------------------------------------

const handlers = {
  welcome(event) {
    state.nick = event.nick;
    state.welcomed = true;
    state.attempts = 0;
    showChat();
    $("my-nick").textContent = state.nick;
    setStatus("connected", "connected");
    for (const notice of state.earlyNotices) systemLine("notice", notice.text, notice.ts);
    state.earlyNotices = [];
    systemLine("welcome", event.text, event.ts);
    state.homeNext = true;
    startRoomsTimer();
  },

  login(event) {
    state.nick = event.nick;
    if (state.pendingPassword !== null) state.password = state.pendingPassword;
    state.pendingPassword = null;
    if ("color" in event) noteColor(event.nick, event.color, event.ts);
    $("my-nick").textContent = state.nick;
    systemLine("login", event.text, event.ts);
  },

  join(event) {
    if (isMe(event.from)) {
      if (state.homeNext) {
        state.home = event.room;
        state.homeNext = false;
      }
      state.room = event.room;
      state.users = [event.from];
      state.quietWho = true;
      showView(roomView(event.room));
      // Going to a room means talking there: a private-message target would surprise.
      if (state.pmTo !== null) setPmTarget(null);
      setTopic(event.room, "");
      showRoom();
      renderUsers();
      systemLine("join", `You joined #${event.room}`, event.ts);
      requestRooms();
      // After a reconnect the server puts us in its default room: go back.
      const back = state.rejoin;
      state.rejoin = null;
      if (back !== null && fold(back) !== fold(event.room)) joinRoom(back);
      return;
    }
    if (state.room === null || fold(event.room) !== fold(state.room)) return;
    if (!state.users.some((nick) => fold(nick) === fold(event.from))) {
      state.users.push(event.from);
    }
    adjustRoomCount(event.room, +1);
    renderUsers();
    systemLine("join", `${event.from} joined #${event.room}`, event.ts, viewOf(event.room));
  },

  leave(event) {
    adjustRoomCount(event.room, -1);
    if (isMe(event.from)) {
      // Switching rooms: the new room's join said it all already.
      if (!event.reason.startsWith("went to ")) {
        systemLine("leave", `You left #${event.room} (${event.reason})`, event.ts,
          viewOf(event.room));
      }
      return;
    }
    if (state.room === null || fold(event.room) !== fold(state.room)) return;
    state.users = state.users.filter((nick) => fold(nick) !== fold(event.from));
    renderUsers();
    systemLine("leave", `${event.from} left #${event.room} (${event.reason})`, event.ts,
      viewOf(event.room));
  },

  // Someone who was in several rooms at once, ours among them, disconnected: the event
  // names none of their rooms. Our room's people list is the only one we have (the other
  // views are of rooms we left), so it is said there, if they were listed; the counts of
  // their other rooms follow at the next refresh.
  quit(event) {
    if (state.room === null || !state.users.some((nick) => fold(nick) === fold(event.from))) {
      return;
    }
    state.users = state.users.filter((nick) => fold(nick) !== fold(event.from));
    adjustRoomCount(state.room, -1);
    renderUsers();
    systemLine("quit", `${event.from} has quit (${event.reason})`, event.ts, viewOf(state.room));
  },

  rename(event) {
    if (isMe(event.from)) {
      // A new name that is not just another spelling logs us out of the account.
      if (fold(event.from) !== fold(event.to)) state.password = null;
      state.nick = event.to;
      $("my-nick").textContent = state.nick;
    }
    if (state.pmTo !== null && fold(state.pmTo) === fold(event.from)) setPmTarget(event.to);
    // Same person, new name: the new name takes their colour (old lines keep the old name).
    const known = state.colors.get(fold(event.from));
    noteColor(event.to, known?.color, event.ts);
    state.users = state.users.map((nick) => (fold(nick) === fold(event.from) ? event.to : nick));
    renderUsers();
    systemLine("rename", `${event.from} is now known as ${event.to}`, event.ts);
  },

  message: roomMessage,
  action: roomMessage,
  msg: privateMessage,

  topic(event) {
    setTopic(event.room, event.topic);
    let text = event.text; // "#room has no topic"
    if (event.topic !== null) {
      text = `Topic of #${event.room}: ${event.topic}${event.by ? ` (set by ${event.by})` : ""}`;
    }
    systemLine("topic", text, event.ts);
  },

  who(event) {
    if (state.room !== null && fold(event.room) === fold(state.room)) {
      state.users = [...event.users];
      setRoomCount(event.room, event.users.length);
      renderUsers();
    }
    if (state.quietWho) state.quietWho = false;
    else systemLine("who", event.text, event.ts);
  },

  rooms(event) {
    state.rooms = new Map(event.rooms.map((room) => [fold(room.name), room]));
    if (state.room !== null && !state.rooms.has(fold(state.room))) {
      state.rooms.set(fold(state.room), { name: state.room, users: state.users.length });
    }
    renderRooms();
    if (state.quietRooms > 0) state.quietRooms -= 1;
    else systemLine("rooms", event.text, event.ts);
  },

  // The full list as a table; one command's help is one line.
  help(event) {
    if (!Array.isArray(event.commands) || event.commands.length < 2) {
      systemLine("help", event.text, event.ts);
      return;
    }
    const line = lineElement("help", event.ts);
    line.classList.add("system");
    const table = element("dl", "help-list");
    for (const command of event.commands) {
      const aliases = command.aliases ?? [];
      const also = aliases.length ? ` (also ${aliases.join(", ")})` : "";
      table.append(element("dt", null, command.usage), element("dd", null, command.summary + also));
    }
    const body = element("div", "body");
    body.append(element("span", "text", "Commands (/help COMMAND for one):"), table);
    line.append(body);
    append(line);
  },

  "history-start"(event) {
    state.history = { view: viewOf(event.room), count: event.count, shown: false };
  },

  "history-end"(event) {
    const replay = state.history;
    const view = replay ? replay.view : viewOf(event.room);
    state.history = null;
    if (replay && replay.shown) {
      const line = element("li", "divider", "now");
      line.dataset.kind = "history-end";
      append(line, false, view);
    } else if (event.count > 0) {
      // Every replayed message is on screen already (a rejoin, or a typed /history).
      systemLine("history", `The last messages of #${event.room} are shown above.`, event.ts,
        view);
    }
  },

  notice(event) {
    state.lastNotice = event.text;
    if (event.text === "password changed" && state.pendingPassword !== null) {
      state.password = state.pendingPassword;
      state.pendingPassword = null;
    }
    if (!state.welcomed) {
      if (!LINE_CLIENT_HINTS.has(event.text)) state.earlyNotices.push(event);
      return;
    }
    const text = event.room ? `#${event.room}: ${event.text}` : event.text;
    systemLine("notice", text, event.ts, viewOf(event.room));
  },

  error(event) {
    // Before the welcome we have sent only a nick or login: this error refuses it.
    if (!state.welcomed) {
      loginRefused(event);
      return;
    }
    state.pendingPassword = null;
    // Too long for the server: say so, and give the text back to be shortened, rather
    // than cut a paste silently (the box has no length limit of its own).
    const tooLong = TOO_LONG.has(event.code) && $("input").value === "" && state.sent.length;
    if (tooLong) $("input").value = state.sent[state.sent.length - 1];
    const text = tooLong ? `${event.text}; your text is back in the box` : event.text;
    const line = systemLine("error", text, event.ts);
    line.dataset.code = event.code;
  },
};

function receive(frame) {
  let event;
  try {
    event = JSON.parse(frame.data);
  } catch {
    return; // the server sends only JSON; ignore anything else rather than crash
  }
  if (!event || typeof event.type !== "string") return;
  const handler = Object.hasOwn(handlers, event.type) ? handlers[event.type] : null;
  if (handler) handler(event);
  else if (typeof event.text === "string") systemLine(event.type, event.text, event.ts);
}

// The server refused our nickname or login.
function loginRefused(event) {
  if (state.chatting && event.code === "nick-taken") {
    // After a dropped connection the server may still hold our old one until its
    // ping times out: try again later rather than give the name up.
    closeSocket("retry");
    return;
  }
  let text = event.text;
  if (event.code === "nick-registered") text = "That nickname is registered; enter its password.";
  closeSocket("abandon");
  showConnect(text, event.code === "nick-registered" || event.code === "login-failed"
    ? "password" : "nick");
}

// -- the connection ---------------------------------------------------------------------

function socketURL() {
  return `${location.protocol === "https:" ? "wss://" : "ws://"}${location.host}/ws`;
}

function send(request) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
  state.ws.send(JSON.stringify(request));
  return true;
}

function connect() {
  clearTimers();
  state.welcomed = false;
  state.closeIntent = null;
  state.lastNotice = null;
  state.quietRooms = 0;
  state.quietWho = false;
  state.history = null;
  state.earlyNotices = [];
  setStatus("connecting", "connecting…");
  const ws = new WebSocket(socketURL(), SUBPROTOCOL);
  state.ws = ws;
  ws.addEventListener("open", () => {
    // The since of nick and login is for the default room, which they join.
    if (state.password !== null) {
      send(withSince({ type: "login", nick: state.nick, password: state.password }, state.home));
    } else {
      send(withSince({ type: "nick", nick: state.nick }, state.home));
    }
  });
  ws.addEventListener("message", receive);
  ws.addEventListener("close", (event) => {
    if (state.ws === ws) closed(event);
  });
}

function closeSocket(intent) {
  state.closeIntent = intent;
  if (state.ws) state.ws.close();
}

// The connection ended: decide whether to come back.
function closed(event) {
  const intent = state.closeIntent;
  const farewell = state.lastNotice;
  state.ws = null;
  state.welcomed = false;
  clearTimers();
  forgetConnection();
  if (intent === "abandon") return;
  if (!state.chatting) {
    // Never got in: say why on the form rather than retrying in the background.
    const reason = event.code === 1000 && farewell ? farewell : "Could not reach the server.";
    showConnect(reason, "nick");
    return;
  }
  state.rejoin = state.room;
  // The server closes with 1000 after a notice saying why: /quit, a kick, a ban, a
  // login elsewhere. Only its shutdown notice means "come back later". Anything else
  // (1006: the connection dropped) is worth retrying.
  if (intent !== "retry" && event.code === 1000 && farewell !== SHUTDOWN_NOTICE) {
    const text = farewell && farewell.startsWith("disconnected") ? farewell
      : `disconnected${farewell ? ` — ${farewell}` : ""}`;
    setStatus("stopped", text);
    systemLine("disconnect", text);
    return;
  }
  if (state.attempts === 0) systemLine("disconnect", farewell === SHUTDOWN_NOTICE
    ? "The server is restarting; reconnecting…" : "Connection lost; reconnecting…");
  scheduleReconnect();
}

// What the server told this connection about who is where is void once it is gone:
// nobody is listed as present, and the rooms lose their counts (the room on screen stays
// listed, to come back to). The next welcome, join and "who" fill them in again.
function forgetConnection() {
  state.users = [];
  renderUsers();
  const here = state.room === null ? null : state.rooms.get(fold(state.room));
  state.rooms = new Map();
  if (state.room !== null) {
    state.rooms.set(fold(state.room), { name: here ? here.name : state.room, users: null });
  }
  renderRooms();
}

// Exponential back-off, 1, 2, 4 ... 30 s, each shortened by up to 20% at random (as the
// terminal client does) so a restarted server is not hit by every client in the same
// second; never longer than the cap.
function scheduleReconnect() {
  const base = Math.min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** state.attempts);
  const delay = base * (1 - 0.2 * Math.random());
  state.attempts += 1;
  state.retryAt = Date.now() + delay * 1000;
  state.retryTimer = setTimeout(connect, delay * 1000);
  showCountdown();
  state.countdownTimer = setInterval(showCountdown, 1000);
}

function showCountdown() {
  const seconds = Math.max(1, Math.ceil((state.retryAt - Date.now()) / 1000));
  setStatus("waiting", `disconnected — reconnecting in ${seconds} s`);
}

// Counts of rooms we are not in change without telling us: ask now and then. (Our own
// join asks at once.)
function startRoomsTimer() {
  state.roomsTimer = setInterval(requestRooms, ROOMS_REFRESH_MS);
}

function requestRooms() {
  if (send({ type: "rooms" })) state.quietRooms += 1;
}

function clearTimers() {
  clearTimeout(state.retryTimer);
  clearInterval(state.countdownTimer);
  clearInterval(state.roomsTimer);
  state.retryTimer = state.countdownTimer = state.roomsTimer = null;
}

function setStatus(name, text) {
  const status = $("status");
  status.dataset.state = name;
  status.textContent = text;
  $("chat-screen").dataset.connection = name; // the phone layout shows it differently
  const reconnect = $("reconnect");
  reconnect.hidden = name !== "waiting" && name !== "stopped";
  reconnect.textContent = name === "waiting" ? "Reconnect now" : "Reconnect";
  $("send-button").disabled = name !== "connected";
}

// -- screens ----------------------------------------------------------------------------

function showChat() {
  if (state.chatting) return;
  state.chatting = true;
  $("connect-screen").hidden = true;
  $("chat-screen").hidden = false;
  $("my-nick").textContent = state.nick;
  $("input").focus();
}

function showConnect(error, focus) {
  clearTimers();
  state.chatting = false;
  $("chat-screen").hidden = true;
  $("connect-screen").hidden = false;
  $("connect-button").disabled = false;
  $("connect-button").textContent = "Connect";
  if (state.nick) $("nick").value = state.nick;
  const box = $("connect-error");
  box.textContent = error ?? "";
  box.hidden = !error;
  $(focus ?? "nick").focus();
}

function submitConnect(event) {
  event.preventDefault();
  const nick = $("nick").value.trim();
  if (!nick) {
    showConnect("Please choose a nickname.", "nick");
    return;
  }
  const password = $("password").value;
  state.nick = nick;
  state.password = password === "" ? null : password;
  state.attempts = 0;
  // The nickname is remembered for next time; the password never is.
  try { localStorage.setItem("chatserv.nick", nick); } catch { /* storage may be off */ }
  $("connect-error").hidden = true;
  $("connect-button").disabled = true;
  $("connect-button").textContent = "Connecting…";
  if (state.ws) closeSocket("abandon");
  connect();
}

// -- typing -----------------------------------------------------------------------------

// A typed password is kept in memory once the server accepts it, so a reconnect can log
// in again. Only these three commands carry one; everything else is the server's business.
function notePassword(line) {
  const match = /^\/(register|login|passwd)\s+(.*)$/i.exec(line.trim());
  if (!match) return;
  const words = match[2].split(/\s+/);
  const index = { register: 0, login: 1, passwd: 1 }[match[1].toLowerCase()];
  state.pendingPassword = words.length === index + 1 ? words[index] : null;
}

function submitInput(event) {
  event.preventDefault();
  const input = $("input");
  const text = input.value;
  if (!text.trim()) return;
  let request;
  if (text.startsWith("/")) {
    notePassword(text);
    request = { type: "line", text };
  } else if (state.pmTo !== null) {
    request = { type: "msg", to: state.pmTo, text };
  } else {
    request = { type: "say", text };
  }
  if (!send(request)) {
    systemLine("error", "Not connected: your message was not sent.");
    return;
  }
  state.sent.push(text);
  if (state.sent.length > 100) state.sent.shift();
  state.sentIndex = state.sent.length;
  input.value = "";
}

// Up and Down walk through what was sent, like a shell.
function recall(event) {
  if (event.key === "Escape" && state.pmTo !== null) {
    setPmTarget(null);
    return;
  }
  if (event.key !== "ArrowUp" && event.key !== "ArrowDown") return;
  const step = event.key === "ArrowUp" ? -1 : 1;
  const index = state.sentIndex + step;
  if (index < 0 || index > state.sent.length) return;
  event.preventDefault();
  state.sentIndex = index;
  $("input").value = state.sent[index] ?? "";
}

// -- phone layout: the side panels slide over the conversation --------------------------

function togglePanel(id) {
  const panel = $(id);
  const open = !panel.classList.contains("open");
  closePanels();
  panel.classList.toggle("open", open);
  $("scrim").hidden = !open;
  document.querySelector(`[aria-controls="${id}"]`).setAttribute("aria-expanded", String(open));
}

function closePanels() {
  $("scrim").hidden = true;
  for (const panel of document.querySelectorAll(".panel.open")) panel.classList.remove("open");
  for (const toggle of document.querySelectorAll(".panel-toggle")) {
    toggle.setAttribute("aria-expanded", "false");
  }
}

// -- start ------------------------------------------------------------------------------

function start() {
  state.view = makeView(null);
  state.view.list.hidden = false;
  try { $("nick").value = localStorage.getItem("chatserv.nick") ?? ""; } catch { /* off */ }
  $("connect-form").addEventListener("submit", submitConnect);
  $("send-form").addEventListener("submit", submitInput);
  $("input").addEventListener("keydown", recall);
  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    joinRoom($("join-room").value);
    $("join-room").value = "";
  });
  $("pm-cancel").addEventListener("click", () => setPmTarget(null));
  $("reconnect").addEventListener("click", () => {
    state.attempts = 0;
    connect();
  });
  $("toggle-rooms").addEventListener("click", () => togglePanel("rooms-panel"));
  $("toggle-users").addEventListener("click", () => togglePanel("users-panel"));
  $("scrim").addEventListener("click", closePanels);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closePanels();
  });
  if ($("nick").value) $("password").focus();
}

start();
