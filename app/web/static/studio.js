// The studio (app/web/studio.py): a client of the gateway's public GraphQL API and no
// other endpoint. Queries and mutations are POSTed; subscriptions go over a websocket
// speaking graphql-transport-ws, which reconnects with backoff and resumes each request
// after the last event it saw (`afterSeq`). The open request is in the URL
// (#request=<id>), so a reload picks it up where it was. The endpoint and the
// development token come from #page-data.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("page-data").textContent);
  var httpUrl = new URL(config.url, window.location.href);
  var wsUrl = new URL(httpUrl.href);
  wsUrl.protocol = httpUrl.protocol === "https:" ? "wss:" : "ws:";
  var TOKEN_KEY = "lumi-studio-token";
  var FINAL = ["COMPLETED", "FAILED", "CANCELLED"];

  function $(id) {
    return document.getElementById(id);
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function token() {
    return window.sessionStorage.getItem(TOKEN_KEY) || "";
  }

  // -- errors --------------------------------------------------------------------------

  function GraphQLError(errors) {
    var first = errors[0] || {};
    var code = first.extensions && first.extensions.code;
    this.message = (first.message || "request failed") + (code ? " (" + code + ")" : "");
    this.code = code;
  }

  function showError(error) {
    var box = $("error");
    box.textContent = error && error.message ? error.message : String(error);
    box.hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
  }

  // -- queries and mutations -----------------------------------------------------------

  function graphql(query, variables) {
    var headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    return answer(
      fetch(httpUrl.href, {
        method: "POST",
        headers: headers,
        body: JSON.stringify({ query: query, variables: variables || {} }),
      })
    );
  }

  function answer(sent) {
    return sent
      .then(function (response) {
        return response.json();
      })
      .then(function (result) {
        if (result.errors && result.errors.length) throw new GraphQLError(result.errors);
        return result.data;
      });
  }

  // A file as `variables.file`, by the GraphQL multipart request specification. The
  // gateway takes a multipart request only with Authorization (or
  // Apollo-Require-Preflight): no cross-site form can post one.
  function graphqlUpload(query, file) {
    var body = new FormData();
    body.append("operations", JSON.stringify({ query: query, variables: { file: null } }));
    body.append("map", JSON.stringify({ 0: ["variables.file"] }));
    body.append("0", file, file.name);
    var headers = { Accept: "application/json", "Apollo-Require-Preflight": "true" };
    if (token()) headers.Authorization = "Bearer " + token();
    return answer(fetch(httpUrl.href, { method: "POST", headers: headers, body: body }));
  }

  // -- subscriptions: graphql-transport-ws ---------------------------------------------

  // One websocket for every subscription of the page. `subscribe` takes a function for
  // its variables, asked again at each (re)subscription, so a resumed subscription
  // starts after the last event its owner saw.
  function Socket() {
    this.socket = null;
    this.acknowledged = false;
    this.subscriptions = new Map();
    this.nextId = 1;
    this.attempt = 0;
    this.timer = 0;
  }

  Socket.prototype.subscribe = function (query, variables, handlers) {
    var id = String(this.nextId++);
    var subscription = { query: query, variables: variables, handlers: handlers };
    this.subscriptions.set(id, subscription);
    if (this.acknowledged) this.send(id, subscription);
    else this.connect();
    var self = this;
    return function unsubscribe() {
      if (self.subscriptions.delete(id) && self.acknowledged) {
        self.socket.send(JSON.stringify({ id: id, type: "complete" }));
      }
    };
  };

  Socket.prototype.send = function (id, subscription) {
    this.socket.send(
      JSON.stringify({
        id: id,
        type: "subscribe",
        payload: { query: subscription.query, variables: subscription.variables() },
      }),
    );
  };

  Socket.prototype.connect = function () {
    if (this.socket || this.timer) return;
    var self = this;
    var socket = new WebSocket(wsUrl.href, "graphql-transport-ws");
    // The protocol's messages are text; binary frames of the same JSON are read too.
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = function () {
      var payload = token() ? { Authorization: "Bearer " + token() } : {};
      socket.send(JSON.stringify({ type: "connection_init", payload: payload }));
    };
    socket.onmessage = function (event) {
      var text = typeof event.data === "string" ? event.data : new TextDecoder().decode(event.data);
      var message = JSON.parse(text);
      var subscription = self.subscriptions.get(message.id);
      if (message.type === "connection_ack") {
        self.acknowledged = true;
        self.attempt = 0;
        self.subscriptions.forEach(function (value, id) {
          self.send(id, value);
        });
      } else if (message.type === "ping") {
        socket.send(JSON.stringify({ type: "pong" }));
      } else if (message.type === "next" && subscription) {
        if (message.payload.errors) subscription.handlers.error(new GraphQLError(message.payload.errors));
        else subscription.handlers.next(message.payload.data);
      } else if (message.type === "error" && subscription) {
        self.subscriptions.delete(message.id);
        subscription.handlers.error(new GraphQLError(message.payload));
      } else if (message.type === "complete" && subscription) {
        self.subscriptions.delete(message.id);
        if (subscription.handlers.complete) subscription.handlers.complete();
      }
    };
    socket.onclose = function (event) {
      if (self.socket !== socket) return; // replaced by restart()
      self.socket = null;
      self.acknowledged = false;
      if (event.code === 4403) {
        showError(new Error("The token was refused: sign in again."));
        return;
      }
      if (!self.subscriptions.size) return;
      // Backoff: 0.5 s, 1 s, 2 s ... up to 15 s, with jitter.
      var delay = Math.min(15000, 500 * Math.pow(2, self.attempt++)) * (0.75 + Math.random() / 2);
      self.timer = window.setTimeout(function () {
        self.timer = 0;
        self.connect();
      }, delay);
    };
  };

  // A new token: a new connection, with every subscription resumed on it.
  Socket.prototype.restart = function () {
    var old = this.socket;
    this.socket = null;
    this.acknowledged = false;
    if (this.timer) window.clearTimeout(this.timer);
    this.timer = 0;
    if (old) old.close(1000);
    if (this.subscriptions.size) this.connect();
  };

  var socket = new Socket();

  // -- the open request ----------------------------------------------------------------

  var REQUEST = [
    "query Request($id: ID!) { request(id: $id) {",
    "  id prompt status phase step progress seq autoModel selectedImageId",
    "  errorCode errorMessage",
    "  images { id index status url }",
    "  model { id format visibility fileUrl previewUrl files { name size url } }",
    "} }",
  ].join("\n");

  var FOLLOW = [
    "subscription Follow($id: ID!, $afterSeq: Int!) {",
    "  requestUpdates(id: $id, afterSeq: $afterSeq) {",
    "    seq status phase step progress message imageId modelId errorCode",
    "  }",
    "}",
  ].join("\n");

  // Where a waiting request stands in line: pushed at most once a second, and ended
  // once nothing of it waits (a later wait, such as the 3D job's, subscribes again).
  var QUEUE = [
    "subscription Queue($id: ID!) {",
    "  requestQueue(id: $id) { queuePosition estimatedStartAt }",
    "}",
  ].join("\n");

  // current: {id, seq (last event seen), shownSeq (whose status is shown), progress,
  // request (last answer of REQUEST), unsubscribe, unwatchQueue}
  var current = null;
  var viewer = null;

  function openRequest(id) {
    if (current && current.unsubscribe) current.unsubscribe();
    if (current && current.unwatchQueue) current.unwatchQueue();
    current = { id: id, seq: 0, shownSeq: -1, progress: 0, request: null, unsubscribe: null };
    showQueue(null);
    window.history.replaceState(null, "", "#request=" + encodeURIComponent(id));
    $("request").hidden = false;
    $("images").replaceChildren();
    $("model").hidden = true;
    $("progress").value = 0;
    $("request-prompt").textContent = "";
    $("request-status").textContent = "";
    delete $("request-status").dataset.status;
    $("step").textContent = "Loading…";
    var opened = current;
    return graphql(REQUEST, { id: id }).then(function (data) {
      if (current !== opened) return;
      if (!data.request) throw new Error("No such request.");
      current.seq = data.request.seq;
      showRequest(data.request);
      if (FINAL.indexOf(data.request.status) < 0) {
        follow(opened);
        watchQueue(opened);
      }
    });
  }

  function watchQueue(opened) {
    if (opened.unwatchQueue) return;
    opened.unwatchQueue = socket.subscribe(
      QUEUE,
      function () {
        return { id: opened.id };
      },
      {
        next: function (data) {
          if (current === opened) showQueue(data.requestQueue);
        },
        error: function () {
          opened.unwatchQueue = null; // the line is extra: the request goes on regardless
        },
        complete: function () {
          opened.unwatchQueue = null;
          if (current === opened) showQueue(null);
        },
      },
    );
  }

  function showQueue(status) {
    var line = $("queue");
    var position = status ? status.queuePosition : null;
    line.hidden = position === null || position === undefined;
    if (line.hidden) return;
    var text = position === 0 ? "Next in line" : position + " ahead in line";
    if (status.estimatedStartAt) {
      var seconds = Math.round((Date.parse(status.estimatedStartAt) - Date.now()) / 1000);
      text += seconds >= 2 ? " · starts in about " + seconds + " s" : " · starting soon";
    }
    line.textContent = text;
    line.dataset.position = String(position);
  }

  function follow(opened) {
    opened.unsubscribe = socket.subscribe(
      FOLLOW,
      function () {
        return { id: opened.id, afterSeq: opened.seq };
      },
      {
        next: function (data) {
          if (current === opened) onEvent(data.requestUpdates);
        },
        error: showError,
      },
    );
  }

  function onEvent(event) {
    if (event.seq <= current.seq) return; // seen already (never expected)
    current.seq = event.seq;
    if (/_PENDING$/.test(event.status)) watchQueue(current); // waits in line again
    if (FINAL.indexOf(event.status) >= 0) showQueue(null);
    showStatus(event.seq, event.status, event.phase, event.message || event.step, event.progress);
    // Images and the model are in the request itself: fetched again when they change.
    if (event.imageId || event.modelId || event.phase !== "IMAGE_GENERATION" || FINAL.indexOf(event.status) >= 0) {
      refresh();
    }
  }

  // Fetches the open request again; one fetch at a time, one more if asked meanwhile.
  function refresh() {
    var opened = current;
    if (opened.refreshing) {
      opened.again = true;
      return;
    }
    opened.refreshing = true;
    graphql(REQUEST, { id: opened.id })
      .then(function (data) {
        if (current === opened && data.request) showRequest(data.request);
      }, showError)
      .then(function () {
        opened.refreshing = false;
        if (opened.again) {
          opened.again = false;
          if (current === opened) refresh();
        }
      });
  }

  // Status and progress only move forward: an answer older than an event already
  // shown changes neither.
  function showStatus(seq, status, phase, step, progress) {
    if (seq > current.shownSeq) {
      current.shownSeq = seq;
      var label = $("request-status");
      label.textContent = status.replace(/_/g, " ").toLowerCase();
      label.dataset.status = status;
      $("step").textContent = step || "";
      current.status = status;
      current.phase = phase;
    }
    current.progress = Math.max(current.progress, progress);
    $("progress").value = current.progress;
  }

  function showRequest(request) {
    current.request = request;
    $("request-prompt").textContent = request.prompt;
    var step = request.errorMessage || request.step;
    showStatus(request.seq, request.status, request.phase, step, request.progress);
    showImages(request);
    showModel(request.model);
  }

  function showImages(request) {
    var grid = $("images");
    var canPick =
      !request.autoModel && current.phase === "AWAITING_SELECTION" && !request.selectedImageId;
    request.images.forEach(function (image) {
      var slot = grid.querySelector('[data-image="' + CSS.escape(image.id) + '"]');
      if (!slot) {
        slot = element("figure", "slot");
        slot.dataset.image = image.id;
        slot.appendChild(element("figcaption", "", ""));
        grid.appendChild(slot);
      }
      slot.dataset.status = image.status;
      slot.classList.toggle("selected", image.id === request.selectedImageId);
      slot.querySelector("figcaption").textContent =
        "Image " + (image.index + 1) + ": " + image.status.toLowerCase();
      // A link is signed anew at each answer: the picture is loaded once.
      if (image.url && !slot.querySelector("img")) {
        var img = element("img");
        img.alt = "Image " + (image.index + 1);
        img.src = image.url;
        slot.insertBefore(img, slot.firstChild);
      }
      var button = slot.querySelector("button");
      if (canPick && image.status === "COMPLETED" && !button) {
        button = element("button", "pick", "Make a 3D model of this one");
        button.type = "button";
        button.addEventListener("click", function () {
          pick(request.id, image.id);
        });
        slot.appendChild(button);
      } else if (!canPick && button) {
        button.remove();
      }
    });
  }

  function pick(requestId, imageId) {
    clearError();
    var SELECT = "mutation Select($r: ID!, $i: ID!) { selectImage(requestId: $r, imageId: $i) { id } }";
    graphql(SELECT, { r: requestId, i: imageId }).then(function () {
      if (current && current.id === requestId) refresh();
    }, showError);
  }

  var CONVERTED_FORMATS = ["STL", "PLY", "USDZ"];
  var CONVERTED_FORMAT_TITLES = {
    STL: "the mesh, for 3D printing",
    PLY: "the mesh",
    USDZ: "for AR Quick Look on iPhone and iPad",
  };

  function downloadAs(modelId, format, button) {
    clearError();
    button.disabled = true;
    var DOWNLOAD =
      "mutation Download($id: ID!, $format: DownloadFormat) { downloadModel(id: $id, format: $format) { url } }";
    graphql(DOWNLOAD, { id: modelId, format: format })
      .then(function (data) {
        var link = element("a");
        link.href = data.downloadModel.url; // signed, and served as an attachment
        link.download = "";
        document.body.appendChild(link);
        link.click();
        link.remove();
        if (current) refresh(); // its file is listed now
      })
      .catch(showError)
      .then(function () {
        button.disabled = false;
      });
  }

  function showModel(model) {
    if (!model) return;
    $("model").hidden = false;
    $("publish").hidden = model.visibility === "PUBLIC";
    $("publish").dataset.model = model.id;
    var links = $("downloads");
    links.replaceChildren(document.createTextNode("Download: "));
    model.files.forEach(function (file) {
      var link = element("a", "download", file.name);
      link.href = file.url;
      link.download = file.name;
      link.title = Math.round(file.size / 1024) + " KiB";
      links.appendChild(link);
    });
    // Other formats are converted on the first download (then listed above).
    var formats = element("span", "formats", "As: ");
    CONVERTED_FORMATS.forEach(function (format) {
      var button = element("button", "as-format", format);
      button.type = "button";
      button.title = CONVERTED_FORMAT_TITLES[format];
      button.addEventListener("click", function () {
        downloadAs(model.id, format, button);
      });
      formats.appendChild(button);
    });
    links.appendChild(formats);
    if (current.modelShown === model.id) return;
    current.modelShown = model.id;
    var canvas = $("viewer");
    var preview = $("model-preview");
    if (model.format === "GLB" && window.LumiGlbViewer) {
      canvas.hidden = false;
      preview.hidden = true;
      try {
        viewer = viewer || new window.LumiGlbViewer(canvas);
        viewer.load(model.fileUrl).catch(showError);
      } catch (error) {
        showError(error);
      }
    } else {
      canvas.hidden = true; // an OBJ: its preview, and the files to download
      preview.hidden = !model.previewUrl;
      if (model.previewUrl) preview.src = model.previewUrl;
    }
  }

  $("publish").addEventListener("click", function () {
    var PUBLISH = "mutation Publish($id: ID!) { publishModel(id: $id) { id visibility } }";
    graphql(PUBLISH, { id: this.dataset.model }).then(function () {
      $("publish").hidden = true;
      loadGallery();
    }, showError);
  });

  // With a file of their own, the prompt is optional (it names the model) and the
  // image options do not apply: the upload is the request's one image.
  function sourceChosen() {
    var file = $("source-image").files[0];
    $("prompt").required = !file;
    $("image-options").disabled = Boolean(file);
    return file;
  }
  $("source-image").addEventListener("change", sourceChosen);

  $("create").addEventListener("submit", function (event) {
    event.preventDefault();
    clearError();
    var CREATE = "mutation Create($input: CreateRequestInput!) { createRequest(input: $input) { id } }";
    var UPLOAD = "mutation Upload($file: Upload!) { uploadImage(file: $file) { id } }";
    var file = sourceChosen();
    var input = { modelFormat: $("model-format").value };
    if ($("prompt").value) input.prompt = $("prompt").value;
    if (!file) {
      input.imageCount = Number($("image-count").value);
      input.autoModel = $("auto-model").checked;
    }
    $("submit").disabled = true;
    var uploaded = file
      ? graphqlUpload(UPLOAD, file).then(function (data) {
          input.sourceImage = data.uploadImage.id;
        })
      : Promise.resolve();
    uploaded
      .then(function () {
        return graphql(CREATE, { input: input });
      })
      .then(function (data) {
        $("source-image").value = ""; // used up: the next request starts afresh
        sourceChosen();
        loadRequests();
        loadMe().catch(showError); // its credits are taken
        return openRequest(data.createRequest.id);
      })
      .catch(showError)
      .then(function () {
        $("submit").disabled = false;
      });
  });

  // -- my requests, live ---------------------------------------------------------------

  var REQUESTS =
    "query Mine { requests(first: 20) { edges { node { id prompt status progress } } } }";
  var MINE = "subscription Mine($afterSeq: Int) { myRequestUpdates(afterSeq: $afterSeq) { requestId userSeq status progress } }";
  var mine = { userSeq: null, unsubscribe: null };

  function requestItem(node) {
    var item = element("li", "item");
    item.dataset.request = node.id;
    var link = element("a", "", node.prompt);
    link.href = "#request=" + encodeURIComponent(node.id);
    link.addEventListener("click", function (event) {
      event.preventDefault();
      clearError();
      openRequest(node.id).catch(showError);
    });
    item.appendChild(link);
    item.appendChild(element("span", "status", ""));
    updateItem(item, node.status, node.progress);
    return item;
  }

  function updateItem(item, status, progress) {
    var label = item.querySelector(".status");
    label.dataset.status = status;
    label.textContent = status.replace(/_/g, " ").toLowerCase() + " · " + Math.round(progress) + "%";
  }

  function loadRequests() {
    if (!token()) return Promise.resolve();
    return graphql(REQUESTS).then(function (data) {
      $("my-requests").replaceChildren.apply(
        $("my-requests"),
        data.requests.edges.map(function (edge) {
          return requestItem(edge.node);
        }),
      );
    }, showError);
  }

  function followMine() {
    if (mine.unsubscribe) mine.unsubscribe();
    mine.unsubscribe = socket.subscribe(
      MINE,
      function () {
        return { afterSeq: mine.userSeq };
      },
      {
        next: function (data) {
          var event = data.myRequestUpdates;
          mine.userSeq = event.userSeq;
          var item = $("my-requests").querySelector('[data-request="' + CSS.escape(event.requestId) + '"]');
          if (item) updateItem(item, event.status, event.progress);
          else loadRequests(); // made elsewhere: another tab, another client
          if (FINAL.indexOf(event.status) >= 0) loadMe().catch(showError); // credits
        },
        error: showError,
      },
    );
  }

  // -- the gallery ---------------------------------------------------------------------

  var GALLERY = [
    "query Gallery { publicModels(first: 20, sort: LATEST) { edges { node {",
    "  id name likeCount favoriteCount likedByMe favoritedByMe previewUrl",
    "  owner { displayName }",
    "} } } }",
  ].join("\n");

  function toggle(kind, model, button) {
    var on = kind === "like" ? model.likedByMe : model.favoritedByMe;
    var name = (on ? "un" : "") + kind + "Model";
    var mutation =
      "mutation Toggle($id: ID!) { " + name + "(id: $id) { id likeCount favoriteCount likedByMe favoritedByMe } }";
    clearError();
    graphql(mutation, { id: model.id }).then(function (data) {
      Object.assign(model, data[name]);
      button.closest("li").replaceWith(galleryCard(model));
    }, showError);
  }

  function galleryCard(model) {
    var card = element("li", "card");
    if (model.previewUrl) {
      var img = element("img");
      img.src = model.previewUrl;
      img.alt = model.name;
      card.appendChild(img);
    }
    card.appendChild(element("strong", "", model.name));
    card.appendChild(element("span", "owner", model.owner ? "by " + model.owner.displayName : ""));
    var like = element("button", "like", (model.likedByMe ? "♥ " : "♡ ") + model.likeCount);
    like.type = "button";
    like.setAttribute("aria-pressed", String(model.likedByMe));
    like.title = model.likedByMe ? "Unlike" : "Like";
    like.addEventListener("click", function () {
      toggle("like", model, like);
    });
    var favorite = element("button", "favorite", (model.favoritedByMe ? "★ " : "☆ ") + model.favoriteCount);
    favorite.type = "button";
    favorite.setAttribute("aria-pressed", String(model.favoritedByMe));
    favorite.title = model.favoritedByMe ? "Remove from favorites" : "Favorite";
    favorite.addEventListener("click", function () {
      toggle("favorite", model, favorite);
    });
    var actions = element("span", "actions");
    actions.append(like, favorite);
    card.appendChild(actions);
    return card;
  }

  function loadGallery() {
    return graphql(GALLERY).then(function (data) {
      var cards = data.publicModels.edges.map(function (edge) {
        return galleryCard(edge.node);
      });
      if (!cards.length) cards = [element("li", "empty", "Nothing published yet.")];
      $("gallery").replaceChildren.apply($("gallery"), cards);
    }, showError);
  }

  // -- signing in ----------------------------------------------------------------------

  function loadMe() {
    return graphql("query Me { me { displayName credits } }").then(function (data) {
      $("me").textContent = data.me.displayName + " · " + data.me.credits + " credits";
    });
  }

  function signIn() {
    clearError();
    socket.restart();
    if (!token()) {
      $("me").textContent = "Not signed in";
      return loadGallery();
    }
    return loadMe()
      .then(function () {
        followMine();
        return Promise.all([loadRequests(), loadGallery()]);
      })
      .catch(function (error) {
        $("me").textContent = "Not signed in";
        showError(error);
      });
  }

  $("sign-in").addEventListener("submit", function (event) {
    event.preventDefault();
    window.sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    signIn().then(function () {
      if (current) openRequest(current.id).catch(showError);
    });
  });

  // In development the page brings a token for `dev`; a token signed in with before
  // (this tab, until it closes) wins.
  if (!token() && config.devToken) window.sessionStorage.setItem(TOKEN_KEY, config.devToken);
  $("token").value = token();
  signIn().then(function () {
    var match = /^#request=(.+)$/.exec(window.location.hash);
    if (match && token()) openRequest(decodeURIComponent(match[1])).catch(showError);
  });
})();
