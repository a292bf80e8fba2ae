"""The Textual dashboard (`vpnrouter tui`): a client of the control socket only."""
