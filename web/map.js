/*
 * Dispatcher live map: keeps one marker per vehicle in step with /ws/dispatch, draws the
 * selected vehicle's route (RouteView) and lists recent route events (EventFeed).
 *
 * Protocol (v1): the server sends a "snapshot" (every vehicle) on connect and after a
 * {"type":"resync"} request, then "delta" frames with the latest state of the vehicles
 * that changed and the route events since the last frame. A close with code 4401 means
 * the session is not (or no longer) valid. Everything shown to the user is set with
 * textContent: names come from whoever registered the device or planned the route.
 */
// The page's entry module: the map's code lives in web/map/, one module per idea (format,
// socket with the shared backoff, vehicles, route view, feed, board, replay, motion).
// folium's inline script runs before a module does, so it queues the map it made in
// window.TrackerMapQueue and this module starts every queued one.
import { LiveMap } from "./map/live_map.js";

function start(map, config) {
  const live = new LiveMap(map, config);
  window.trackerMap = live;
  live.connect();
  return live;
}

window.TrackerMap = { start };
for (const [map, config] of window.TrackerMapQueue || []) start(map, config);
window.TrackerMapQueue = { push: ([map, config]) => start(map, config) };
