"""Errors a user can cause. Each message names the file, session or key and the fix."""


class FaceRhythmError(Exception):
    """Base class for errors caused by input or configuration."""


class VideoError(FaceRhythmError):
    """A video is missing, unreadable, empty or inconsistent with its session."""


class ROIError(FaceRhythmError):
    """An ROI source is missing, malformed or does not fit the video."""


class ConfigError(FaceRhythmError):
    """The config or the sessions table breaks the schema or is inconsistent."""


class SpectrogramError(FaceRhythmError):
    """The spectral stage cannot run on the given data (e.g. video shorter than the window)."""


class TCAError(FaceRhythmError):
    """The decomposition cannot run with the given data and parameters."""


class FaceRhythmWarning(UserWarning):
    """Input that is accepted but probably not what the user meant (e.g. a misspelled column)."""


class EventsError(FaceRhythmError):
    """An events file is malformed or its events do not fit the session."""


class NWBError(FaceRhythmError):
    """NWB export cannot run: missing session metadata, or an acquisition file that does
    not fit the session."""
