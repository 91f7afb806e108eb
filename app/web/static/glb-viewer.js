// A small viewer for a glTF 2.0 binary (GLB) holding one mesh, textured or not: drag to
// turn it, scroll to zoom. It reads the first primitive of the first mesh (POSITION,
// NORMAL when present, TEXCOORD_0, indices) and its material's base colour (factor and
// texture, decoded from the file itself), fits the camera to the mesh's bounding box and
// lights it with one directional light (Lambert) from beside the camera. Node transforms,
// skins, animations and other primitives are left out: the gateway's models are a single
// mesh. Plain WebGL 1, no library; defines the global LumiGlbViewer.
(function () {
  "use strict";

  var GLB_MAGIC = 0x46546c67; // "glTF"
  var CHUNK_JSON = 0x4e4f534a;
  var CHUNK_BIN = 0x004e4942;
  var TRIANGLES = 4;
  var SIZES = { SCALAR: 1, VEC2: 2, VEC3: 3, VEC4: 4 };
  // componentType: [bytes, DataView getter, largest value (to normalize integers)]
  var COMPONENTS = {
    5120: [1, "getInt8", 127],
    5121: [1, "getUint8", 255],
    5122: [2, "getInt16", 32767],
    5123: [2, "getUint16", 65535],
    5125: [4, "getUint32", 4294967295],
    5126: [4, "getFloat32", 1],
  };

  var VERTEX_SHADER = [
    "attribute vec3 position;",
    "attribute vec3 normal;",
    "attribute vec2 uv;",
    "uniform mat4 viewProjection;",
    "varying vec3 vNormal;",
    "varying vec2 vUv;",
    "void main() {",
    "  vNormal = normal;",
    "  vUv = uv;",
    "  gl_Position = viewProjection * vec4(position, 1.0);",
    "}",
  ].join("\n");

  var FRAGMENT_SHADER = [
    "precision mediump float;",
    "uniform sampler2D baseColor;",
    "uniform vec4 baseColorFactor;",
    "uniform vec3 light;",
    "varying vec3 vNormal;",
    "varying vec2 vUv;",
    "void main() {",
    "  vec3 n = normalize(vNormal);",
    "  if (!gl_FrontFacing) n = -n;", // both sides of thin surfaces are lit
    "  float diffuse = max(dot(n, light), 0.0);",
    "  vec4 colour = texture2D(baseColor, vUv) * baseColorFactor;",
    "  gl_FragColor = vec4(colour.rgb * (0.35 + 0.75 * diffuse), colour.a);",
    "}",
  ].join("\n");

  // -- the file ------------------------------------------------------------------------

  function parseGlb(buffer) {
    var view = new DataView(buffer);
    if (buffer.byteLength < 20 || view.getUint32(0, true) !== GLB_MAGIC) {
      throw new Error("not a GLB file");
    }
    if (view.getUint32(4, true) !== 2) throw new Error("not glTF 2.0");
    var end = Math.min(view.getUint32(8, true), buffer.byteLength);
    var offset = 12;
    var gltf = null;
    var bin = null;
    while (offset + 8 <= end) {
      var length = view.getUint32(offset, true);
      var type = view.getUint32(offset + 4, true);
      var start = offset + 8;
      if (start + length > end) throw new Error("a GLB chunk runs past the file");
      if (type === CHUNK_JSON && gltf === null) {
        gltf = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, start, length)));
      } else if (type === CHUNK_BIN && bin === null) {
        bin = new DataView(buffer, start, length);
      }
      offset = start + length + (-length & 3); // chunks are 4-byte aligned
    }
    if (gltf === null) throw new Error("the GLB has no JSON chunk");
    return { gltf: gltf, bin: bin };
  }

  function bufferView(file, index) {
    var spec = file.gltf.bufferViews[index];
    if (!file.bin || (spec.buffer || 0) !== 0) {
      throw new Error("only data inside the GLB is read");
    }
    return spec;
  }

  // An accessor as a flat Float32Array (integers normalized when the accessor says so).
  function readAccessor(file, index) {
    var accessor = file.gltf.accessors[index];
    var size = SIZES[accessor.type];
    var component = COMPONENTS[accessor.componentType];
    if (!size || !component) throw new Error("an accessor of an unknown type");
    var out = new Float32Array(accessor.count * size);
    if (accessor.bufferView === undefined) return out; // all zeros, by the spec
    if (accessor.sparse) throw new Error("sparse accessors are not read");
    var spec = bufferView(file, accessor.bufferView);
    var stride = spec.byteStride || size * component[0];
    var base = (spec.byteOffset || 0) + (accessor.byteOffset || 0);
    var scale = accessor.normalized ? component[2] : 1;
    var get = component[1];
    for (var i = 0; i < accessor.count; i++) {
      for (var c = 0; c < size; c++) {
        var value = file.bin[get](base + i * stride + c * component[0], true);
        out[i * size + c] = scale === 1 ? value : Math.max(value / scale, -1);
      }
    }
    return out;
  }

  // The first mesh's first primitive, unindexed (three vertices per triangle), with
  // normals (from the file, else each triangle's own) and texture coordinates.
  function readMesh(file) {
    var gltf = file.gltf;
    var primitive = gltf.meshes && gltf.meshes[0] && gltf.meshes[0].primitives[0];
    if (!primitive || primitive.attributes.POSITION === undefined) {
      throw new Error("the file holds no mesh");
    }
    if ((primitive.mode === undefined ? TRIANGLES : primitive.mode) !== TRIANGLES) {
      throw new Error("only triangle meshes are drawn");
    }
    var attributes = primitive.attributes;
    var positions = readAccessor(file, attributes.POSITION);
    var normals = attributes.NORMAL === undefined ? null : readAccessor(file, attributes.NORMAL);
    var uvs = attributes.TEXCOORD_0 === undefined ? null : readAccessor(file, attributes.TEXCOORD_0);
    var vertexCount = positions.length / 3;
    var indices = primitive.indices === undefined ? null : readAccessor(file, primitive.indices);
    var count = indices ? indices.length : vertexCount;
    count -= count % 3;

    var mesh = {
      count: count,
      positions: new Float32Array(count * 3),
      normals: new Float32Array(count * 3),
      uvs: new Float32Array(count * 2),
      min: [Infinity, Infinity, Infinity],
      max: [-Infinity, -Infinity, -Infinity],
      material: primitive.material,
    };
    for (var i = 0; i < count; i++) {
      var v = indices ? indices[i] : i;
      if (v >= vertexCount) throw new Error("an index past the vertices");
      for (var c = 0; c < 3; c++) {
        var p = positions[v * 3 + c];
        mesh.positions[i * 3 + c] = p;
        if (p < mesh.min[c]) mesh.min[c] = p;
        if (p > mesh.max[c]) mesh.max[c] = p;
        if (normals) mesh.normals[i * 3 + c] = normals[v * 3 + c];
      }
      if (uvs) {
        mesh.uvs[i * 2] = uvs[v * 2];
        mesh.uvs[i * 2 + 1] = uvs[v * 2 + 1];
      }
    }
    if (!normals) flatNormals(mesh.positions, mesh.normals);
    return mesh;
  }

  function flatNormals(positions, normals) {
    for (var t = 0; t < positions.length; t += 9) {
      var a = positions.subarray(t, t + 3);
      var b = positions.subarray(t + 3, t + 6);
      var c = positions.subarray(t + 6, t + 9);
      var n = normalize(cross(subtract(b, a), subtract(c, a)));
      for (var k = 0; k < 3; k++) normals.set(n, t + k * 3);
    }
  }

  // The material's base colour factor and its texture's image (a promise of an
  // ImageBitmap, or null when there is none).
  function readMaterial(file, index) {
    var gltf = file.gltf;
    var material = (gltf.materials || [])[index] || {};
    var pbr = material.pbrMetallicRoughness || {};
    var result = { factor: pbr.baseColorFactor || [1, 1, 1, 1], image: Promise.resolve(null) };
    var texture = pbr.baseColorTexture && (gltf.textures || [])[pbr.baseColorTexture.index];
    var image = texture && (gltf.images || [])[texture.source];
    if (image && image.bufferView !== undefined) {
      var spec = bufferView(file, image.bufferView);
      var bytes = new Uint8Array(
        file.bin.buffer,
        file.bin.byteOffset + (spec.byteOffset || 0),
        spec.byteLength,
      );
      // Decoded from bytes, not a URL: nothing for the page's policy to allow.
      var blob = new Blob([bytes], { type: image.mimeType || "image/png" });
      result.image = createImageBitmap(blob);
    }
    return result;
  }

  // -- a little linear algebra (column-major 4x4 matrices, as WebGL takes them) ------

  function subtract(a, b) {
    return [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  }

  function cross(a, b) {
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  }

  function normalize(a) {
    var length = Math.hypot(a[0], a[1], a[2]) || 1;
    return [a[0] / length, a[1] / length, a[2] / length];
  }

  function dot(a, b) {
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  }

  function perspective(fovY, aspect, near, far) {
    var f = 1 / Math.tan(fovY / 2);
    var range = 1 / (near - far);
    return [f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * range, -1, 0, 0, 2 * far * near * range, 0];
  }

  function lookAt(eye, target, up) {
    var z = normalize(subtract(eye, target));
    var x = normalize(cross(up, z));
    var y = cross(z, x);
    return [
      x[0], y[0], z[0], 0,
      x[1], y[1], z[1], 0,
      x[2], y[2], z[2], 0,
      -dot(x, eye), -dot(y, eye), -dot(z, eye), 1,
    ];
  }

  function multiply(a, b) {
    var out = new Array(16);
    for (var col = 0; col < 4; col++) {
      for (var row = 0; row < 4; row++) {
        var sum = 0;
        for (var k = 0; k < 4; k++) sum += a[k * 4 + row] * b[col * 4 + k];
        out[col * 4 + row] = sum;
      }
    }
    return out;
  }

  // -- the viewer ----------------------------------------------------------------------

  function compile(gl, type, source) {
    var shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) {
      throw new Error("shader: " + gl.getShaderInfoLog(shader));
    }
    return shader;
  }

  function LumiGlbViewer(canvas) {
    // preserveDrawingBuffer: the picture stays readable (a screenshot, a test) after it
    // is shown.
    var gl = canvas.getContext("webgl", { antialias: true, preserveDrawingBuffer: true });
    if (!gl) throw new Error("this browser has no WebGL");
    this.canvas = canvas;
    this.gl = gl;
    var program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX_SHADER));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT_SHADER));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) {
      throw new Error("shader program: " + gl.getProgramInfoLog(program));
    }
    this.program = program;
    this.buffers = [];
    this.texture = null;
    this.mesh = null;
    this.yaw = 0.6;
    this.pitch = 0.5;
    this.distance = 1;
    this.frame = 0;
    this.url = null;
    this.listen();
  }

  // Loads the GLB at `url` and draws it; a promise that settles once it is drawn.
  LumiGlbViewer.prototype.load = function (url) {
    var viewer = this;
    viewer.url = url;
    return fetch(url)
      .then(function (response) {
        if (!response.ok) throw new Error("the model file answered " + response.status);
        return response.arrayBuffer();
      })
      .then(function (buffer) {
        var file = parseGlb(buffer);
        var mesh = readMesh(file);
        var material = readMaterial(file, mesh.material);
        return material.image.then(function (image) {
          if (viewer.url !== url) return; // another model was asked for meanwhile
          viewer.show(mesh, material.factor, image);
        });
      });
  };

  LumiGlbViewer.prototype.show = function (mesh, factor, image) {
    var gl = this.gl;
    this.buffers.forEach(function (buffer) {
      gl.deleteBuffer(buffer);
    });
    this.buffers = [];
    var program = this.program;
    gl.useProgram(program);
    var self = this;
    [
      ["position", mesh.positions, 3],
      ["normal", mesh.normals, 3],
      ["uv", mesh.uvs, 2],
    ].forEach(function (attribute) {
      var buffer = gl.createBuffer();
      gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
      gl.bufferData(gl.ARRAY_BUFFER, attribute[1], gl.STATIC_DRAW);
      var location = gl.getAttribLocation(program, attribute[0]);
      gl.enableVertexAttribArray(location);
      gl.vertexAttribPointer(location, attribute[2], gl.FLOAT, false, 0, 0);
      self.buffers.push(buffer);
    });

    if (this.texture) gl.deleteTexture(this.texture);
    this.texture = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    if (image) {
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, image);
    } else {
      var white = new Uint8Array([255, 255, 255, 255]);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, 1, 1, 0, gl.RGBA, gl.UNSIGNED_BYTE, white);
    }
    // Clamped and unfiltered by mipmaps: any size of image works in WebGL 1.
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    gl.uniform4fv(gl.getUniformLocation(program, "baseColorFactor"), factor);

    this.mesh = mesh;
    this.center = [0, 1, 2].map(function (c) {
      return (mesh.min[c] + mesh.max[c]) / 2;
    });
    this.radius = Math.max(Math.hypot.apply(null, subtract(mesh.max, mesh.min)) / 2, 1e-6);
    this.distance = this.radius / Math.sin(this.fov() / 2);
    this.draw();
  };

  LumiGlbViewer.prototype.fov = function () {
    return Math.PI / 4;
  };

  LumiGlbViewer.prototype.redraw = function () {
    var viewer = this;
    if (!viewer.frame && viewer.mesh) {
      viewer.frame = requestAnimationFrame(function () {
        viewer.frame = 0;
        viewer.draw();
      });
    }
  };

  LumiGlbViewer.prototype.draw = function () {
    var gl = this.gl;
    var canvas = this.canvas;
    var ratio = window.devicePixelRatio || 1;
    var width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    var height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    gl.viewport(0, 0, width, height);
    gl.clearColor(0.94, 0.95, 0.97, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    if (!this.mesh) return;
    gl.enable(gl.DEPTH_TEST);

    var direction = [
      Math.cos(this.pitch) * Math.sin(this.yaw),
      Math.sin(this.pitch),
      Math.cos(this.pitch) * Math.cos(this.yaw),
    ];
    var eye = this.center.map(function (c, i) {
      return c + direction[i] * this.distance;
    }, this);
    var near = Math.max(this.distance - this.radius * 2, this.radius * 0.01);
    var far = this.distance + this.radius * 2;
    var matrix = multiply(
      perspective(this.fov(), width / height, near, far),
      lookAt(eye, this.center, [0, 1, 0]),
    );
    // The light comes from above the camera, a little to its side.
    var light = normalize([direction[0] + 0.3, direction[1] + 0.8, direction[2] + 0.2]);
    gl.useProgram(this.program);
    gl.uniformMatrix4fv(gl.getUniformLocation(this.program, "viewProjection"), false, matrix);
    gl.uniform3fv(gl.getUniformLocation(this.program, "light"), light);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    gl.uniform1i(gl.getUniformLocation(this.program, "baseColor"), 0);
    gl.drawArrays(gl.TRIANGLES, 0, this.mesh.count);
  };

  // Drag turns the model, the wheel zooms; the page does not scroll meanwhile.
  LumiGlbViewer.prototype.listen = function () {
    var viewer = this;
    var canvas = this.canvas;
    var last = null;
    canvas.addEventListener("pointerdown", function (event) {
      last = [event.clientX, event.clientY];
      canvas.setPointerCapture(event.pointerId);
    });
    canvas.addEventListener("pointermove", function (event) {
      if (!last) return;
      viewer.yaw -= (event.clientX - last[0]) * 0.01;
      viewer.pitch += (event.clientY - last[1]) * 0.01;
      viewer.pitch = Math.max(-1.55, Math.min(1.55, viewer.pitch));
      last = [event.clientX, event.clientY];
      viewer.redraw();
    });
    function release() {
      last = null;
    }
    canvas.addEventListener("pointerup", release);
    canvas.addEventListener("pointercancel", release);
    canvas.addEventListener(
      "wheel",
      function (event) {
        if (!viewer.mesh) return;
        event.preventDefault();
        var distance = viewer.distance * Math.exp(event.deltaY * 0.001);
        viewer.distance = Math.max(viewer.radius * 0.5, Math.min(viewer.radius * 20, distance));
        viewer.redraw();
      },
      { passive: false },
    );
    if (window.ResizeObserver) {
      new ResizeObserver(function () {
        viewer.redraw();
      }).observe(canvas);
    }
  };

  window.LumiGlbViewer = LumiGlbViewer;
})();
