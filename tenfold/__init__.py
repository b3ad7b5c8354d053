"""Train-time pieces of the tenfold entry point that Lightning lacks (see ``tenfold.loggers``)."""
