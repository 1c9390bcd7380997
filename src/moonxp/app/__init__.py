"""The application: the command line, the main job, its report and its output files."""
