// Pano360 360° viewer core: a standalone ES module (no ComfyUI imports), used by the
// ComfyUI extension (pano360.js) and by plain pages (the headless-browser test).
//
// Rendering: one full-screen quad whose fragment shader turns each screen pixel into a
// ray and samples the equirect at that ray's longitude/latitude.  The mapping is the
// pack's own (docs/conventions.md), not three.js's sphere UVs:
//   world axes x right, y up, z forward;  dir = (cos lat sin lon, sin lat, cos lat cos lon)
//   texture s = lon / 2pi + 0.5  (s = 0.5 is the centre column = forward, +lon to the right)
//   texture t = 0.5 + lat / pi   (three.js flips images so t = 1 is the top row)
// Camera: +yaw turns right, +pitch looks up, fov is horizontal.  Exact at the poles (no
// sphere tessellation) and without mipmaps, so the 0/360 seam shows no line.

// three.js: the page's own if it exposes one (window.THREE, as some pages and packs
// do), else the vendored copy.  three.js marks a page with window.__THREE__ and warns
// "Multiple instances of Three.js being imported" when a second copy loads.  The
// ComfyUI frontend bundles its own three.js (3D nodes) without exposing it, so the
// vendored copy is imported with that mark put aside and restored afterwards: neither
// copy sees the other, whichever loads first.
const THREE_MARK = "__THREE__";
const REQUIRED = ["WebGLRenderer", "ShaderMaterial", "Scene", "Mesh", "PlaneGeometry", "OrthographicCamera",
  "Vector2", "Vector4", "TextureLoader", "VideoTexture", "NoColorSpace", "RepeatWrapping"];

export function usableThree(candidate) {
  return !!candidate && REQUIRED.every((name) => candidate[name] !== undefined);
}

async function loadThree() {
  if (usableThree(globalThis.THREE)) return { THREE: globalThis.THREE, source: "page" };
  const had = Object.prototype.hasOwnProperty.call(globalThis, THREE_MARK);
  const mark = globalThis[THREE_MARK];
  delete globalThis[THREE_MARK];
  try {
    return { THREE: await import("./vendor/three/three.module.min.js"), source: "vendored" };
  } finally {
    delete globalThis[THREE_MARK];
    if (had) globalThis[THREE_MARK] = mark;
  }
}

const loaded = await loadThree();
const THREE = loaded.THREE;
/** Which three.js the viewer uses: "page" (window.THREE) or "vendored". */
export const THREE_SOURCE = loaded.source;

export const DEFAULT_VIEW = Object.freeze({ yaw: 0, pitch: 0, fov: 90 });
export const FOV_LIMITS = Object.freeze({ min: 20, max: 120 });
// Wheel zoom: fov is multiplied by exp(deltaY * WHEEL_ZOOM_RATE) (one notch ~ 100 -> x1.1).
export const WHEEL_ZOOM_RATE = 0.001;
export const STEREO_MODES = Object.freeze(["mono", "top-bottom", "left-right"]);

const DEG = Math.PI / 180;

/** Screen-space drag (pixels) -> new view: grabbing the panorama, so dragging left turns right.
 *  One pixel is fov / width degrees horizontally and vfov / height vertically. */
export function viewAfterDrag(view, dx, dy, width, height) {
  const vfov = verticalFov(view.fov, width, height);
  return clampView({
    yaw: view.yaw - (dx * view.fov) / width,
    pitch: view.pitch + (dy * vfov) / height,
    fov: view.fov,
  });
}

export function verticalFov(fov, width, height) {
  return (2 * Math.atan(Math.tan((fov * DEG) / 2) * (height / width))) / DEG;
}

export function clampView(view) {
  let yaw = ((((view.yaw + 180) % 360) + 360) % 360) - 180;
  return {
    yaw,
    pitch: Math.max(-90, Math.min(90, view.pitch)),
    fov: Math.max(FOV_LIMITS.min, Math.min(FOV_LIMITS.max, view.fov)),
  };
}

/** Texture coordinates (three.js, flipY) of a world direction, pack convention. */
export function directionToTexCoord(x, y, z) {
  const lon = Math.atan2(x, z);
  const lat = Math.asin(Math.max(-1, Math.min(1, y / Math.hypot(x, y, z))));
  return { s: lon / (2 * Math.PI) + 0.5, t: 0.5 + lat / Math.PI };
}

const VERTEX = /* glsl */ `
varying vec2 vNdc;
void main() {
  vNdc = position.xy;
  gl_Position = vec4(position.xy, 0.0, 1.0);
}`;

// Same formulas as directionToTexCoord; camera-to-world R = Ry(yaw) * Rx(-pitch).
const FRAGMENT = /* glsl */ `
precision highp float;
uniform sampler2D map;
uniform float yaw;
uniform float pitch;
uniform vec2 tanHalf;      // tan(hfov/2), tan(vfov/2)
uniform vec4 eyeRect;      // s offset, t offset, s scale, t scale (stereo: one eye)
varying vec2 vNdc;
const float PI = 3.141592653589793;
void main() {
  vec3 d = normalize(vec3(vNdc.x * tanHalf.x, vNdc.y * tanHalf.y, 1.0));
  float cp = cos(pitch), sp = sin(pitch);
  d = vec3(d.x, cp * d.y + sp * d.z, -sp * d.y + cp * d.z);
  float cy = cos(yaw), sy = sin(yaw);
  d = vec3(cy * d.x + sy * d.z, d.y, -sy * d.x + cy * d.z);
  float lon = atan(d.x, d.z);
  float lat = asin(clamp(d.y, -1.0, 1.0));
  vec2 st = vec2(lon / (2.0 * PI) + 0.5, 0.5 + lat / PI);
  st.x = fract(st.x);
  gl_FragColor = texture2D(map, eyeRect.xy + st * eyeRect.zw);
}`;

function eyeRectFor(stereo) {
  // Left eye: top half (t in [0.5, 1] after flipY) or left half of the frame.
  if (stereo === "top-bottom") return new THREE.Vector4(0, 0.5, 1, 0.5);
  if (stereo === "left-right") return new THREE.Vector4(0, 0, 0.5, 1);
  return new THREE.Vector4(0, 0, 1, 1);
}

/**
 * Create a viewer inside `container` (a block element; the canvas fills it).
 * Returns { load, setView, getView, dragBy, play, pause, togglePlay, isVideo, renderNow, dispose, canvas }.
 */
export function createViewer(container, options = {}) {
  const renderer = new THREE.WebGLRenderer({
    antialias: false,
    preserveDrawingBuffer: !!options.preserveDrawingBuffer,
  });
  renderer.setPixelRatio(options.pixelRatio || window.devicePixelRatio || 1);
  const canvas = renderer.domElement;
  canvas.style.cssText = "display:block;width:100%;height:100%;cursor:grab;touch-action:none;outline:none";
  canvas.tabIndex = 0;
  container.appendChild(canvas);

  const uniforms = {
    map: { value: null },
    yaw: { value: 0 },
    pitch: { value: 0 },
    tanHalf: { value: new THREE.Vector2(1, 1) },
    eyeRect: { value: eyeRectFor("mono") },
  };
  const material = new THREE.ShaderMaterial({ uniforms, vertexShader: VERTEX, fragmentShader: FRAGMENT, depthTest: false });
  const scene = new THREE.Scene();
  scene.add(new THREE.Mesh(new THREE.PlaneGeometry(2, 2), material));
  const camera = new THREE.OrthographicCamera(-1, 1, 1, -1, 0, 1);

  let view = clampView({ ...DEFAULT_VIEW, ...(options.view || {}) });
  let texture = null;
  let video = null;
  let frameRequest = 0;
  let disposed = false;
  let loadToken = 0; // the latest load(); an earlier one that finishes later is dropped
  const listeners = [];

  function size() {
    const w = Math.max(1, container.clientWidth);
    const h = Math.max(1, container.clientHeight);
    return { w, h };
  }

  function renderNow() {
    if (disposed) return;
    const { w, h } = size();
    if (canvas.width !== Math.round(w * renderer.getPixelRatio()) || canvas.height !== Math.round(h * renderer.getPixelRatio())) {
      renderer.setSize(w, h, false);
    }
    uniforms.yaw.value = view.yaw * DEG;
    uniforms.pitch.value = view.pitch * DEG;
    const vfov = verticalFov(view.fov, w, h);
    uniforms.tanHalf.value.set(Math.tan((view.fov * DEG) / 2), Math.tan((vfov * DEG) / 2));
    // Upload the current video frame on every draw (also while paused or seeking):
    // VideoTexture's own frame callback does not fire for a paused video.
    if (video && texture && video.readyState >= 2) texture.needsUpdate = true;
    if (texture) renderer.render(scene, camera);
    else renderer.clear();
  }

  function requestRender() {
    if (frameRequest || disposed) return;
    frameRequest = requestAnimationFrame(() => {
      frameRequest = 0;
      renderNow();
      if (video && !video.paused) requestRender();
    });
  }

  function setView(v) {
    view = clampView({ ...view, ...v });
    requestRender();
    if (options.onViewChange) options.onViewChange(getView());
  }

  function getView() {
    return { ...view };
  }

  function dragBy(dx, dy) {
    const { w, h } = size();
    setView(viewAfterDrag(view, dx, dy, w, h));
  }

  function on(target, type, fn, opts) {
    target.addEventListener(type, fn, opts);
    listeners.push(() => target.removeEventListener(type, fn, opts));
  }

  let drag = null;
  on(canvas, "pointerdown", (e) => {
    if (e.button !== 0) return;
    drag = { x: e.clientX, y: e.clientY, id: e.pointerId };
    canvas.setPointerCapture?.(e.pointerId);
    canvas.style.cursor = "grabbing";
    e.preventDefault();
    e.stopPropagation();
  });
  on(canvas, "pointermove", (e) => {
    if (!drag || e.pointerId !== drag.id) return;
    dragBy(e.clientX - drag.x, e.clientY - drag.y);
    drag.x = e.clientX;
    drag.y = e.clientY;
    e.preventDefault();
    e.stopPropagation();
  });
  const endDrag = (e) => {
    if (!drag || e.pointerId !== drag.id) return;
    drag = null;
    canvas.style.cursor = "grab";
  };
  on(canvas, "pointerup", endDrag);
  on(canvas, "pointercancel", endDrag);
  on(canvas, "wheel", (e) => {
    setView({ fov: view.fov * Math.exp(e.deltaY * WHEEL_ZOOM_RATE) });
    e.preventDefault();
    e.stopPropagation();
  }, { passive: false });
  on(canvas, "dblclick", () => togglePlay());
  on(canvas, "keydown", (e) => {
    if (e.key === " ") { togglePlay(); e.preventDefault(); }
  });

  if (typeof ResizeObserver !== "undefined") {
    const ro = new ResizeObserver(() => requestRender());
    ro.observe(container);
    listeners.push(() => ro.disconnect());
  }

  function releaseMedia() {
    if (video) {
      video.pause();
      video.removeAttribute("src");
      video.load();
      video = null;
    }
    if (texture) {
      texture.dispose();
      texture = null;
    }
    uniforms.map.value = null;
  }

  function prepare(tex) {
    // Raw sRGB values in, raw values out: the shader writes gl_FragColor without
    // three.js colour management, so the texture must not be linearised either.
    tex.colorSpace = THREE.NoColorSpace;
    tex.wrapS = THREE.RepeatWrapping;
    tex.wrapT = THREE.ClampToEdgeWrapping;
    tex.minFilter = THREE.LinearFilter;
    tex.magFilter = THREE.LinearFilter;
    tex.generateMipmaps = false;
    return tex;
  }

  /** Load `{url, kind: "image"|"video", stereo}`.  Resolves `true` when the first frame can be
   *  drawn, or `false` when a later load() (or dispose) replaced this one before it finished. */
  function load({ url, kind = "image", stereo = "mono" }) {
    if (!STEREO_MODES.includes(stereo)) throw new Error(`Pano360 viewer: unknown stereo mode ${stereo}`);
    const token = ++loadToken;
    const current = () => token === loadToken && !disposed;
    releaseMedia();
    uniforms.eyeRect.value = eyeRectFor(stereo);
    if (kind === "video") {
      const v = document.createElement("video");
      v.crossOrigin = "anonymous";
      v.loop = true;
      v.muted = true;
      v.playsInline = true;
      v.preload = "auto";
      video = v;
      return new Promise((resolve, reject) => {
        v.addEventListener("loadeddata", () => {
          if (!current()) return resolve(false);
          texture = prepare(new THREE.VideoTexture(v));
          uniforms.map.value = texture;
          requestRender();
          resolve(true);
        }, { once: true });
        v.addEventListener("error", () => {
          if (!current()) return resolve(false); // releaseMedia() of a later load empties this video
          reject(new Error(`Pano360 viewer: cannot load video ${url}`));
        }, { once: true });
        v.addEventListener("play", () => requestRender());
        v.src = url;
      });
    }
    return new Promise((resolve, reject) => {
      new THREE.TextureLoader().load(url, (tex) => {
        if (!current()) { tex.dispose(); return resolve(false); }
        texture = prepare(tex);
        uniforms.map.value = texture;
        requestRender();
        resolve(true);
      }, undefined, () => (current() ? reject(new Error(`Pano360 viewer: cannot load image ${url}`)) : resolve(false)));
    });
  }

  function play() { if (video) return video.play().then(requestRender); return Promise.resolve(); }
  function pause() { if (video) video.pause(); }
  function togglePlay() { if (video) return video.paused ? play() : (pause(), Promise.resolve()); return Promise.resolve(); }

  function dispose() {
    disposed = true;
    if (frameRequest) cancelAnimationFrame(frameRequest);
    listeners.forEach((off) => off());
    releaseMedia();
    material.dispose();
    renderer.dispose();
    canvas.remove();
  }

  renderNow();
  return {
    canvas, load, setView, getView, dragBy, play, pause, togglePlay, renderNow, dispose,
    isVideo: () => !!video,
    isPlaying: () => !!video && !video.paused,
  };
}
