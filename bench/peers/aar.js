// axios + axios-auth-refresh, configured as its README shows.
import { installPeer } from "./aar-setup.js";

installPeer("axios + axios-auth-refresh");
