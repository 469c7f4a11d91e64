"""Why a photo was not judged, in Chinese: the reasons of `results.jsonl`'s error and duplicate records as the
inspectors who uploaded the photos read them (the report's error table, the upload page's results).

The reasons themselves stay in English (scripts, tests and earlier runs read them); each begins with one of the fixed
phrases below, which `reason_zh` puts in Chinese, keeping what follows the phrase (a file name, a size, the decoder's
words) as it is.
"""

from __future__ import annotations

from detect.imageio import UNREAD_IMAGE_SUFFIXES, VIDEO_NOT_READ

_FORMAT_ZH = {"camera RAW": "相机 RAW"}

#: (the English reason's beginning, its Chinese), most specific first.
REASONS_ZH: tuple[tuple[str, str], ...] = (
    *((f"{fmt} files are not read", f"不读取此格式（{_FORMAT_ZH.get(fmt, fmt)}）：请转换为 JPEG 或 PNG")
      for fmt in sorted(set(UNREAD_IMAGE_SUFFIXES.values()))),
    (VIDEO_NOT_READ, "视频不作为照片判读：请作为巡查视频上传（streetwatch patrol）"),
    ("symbolic link to a folder", "指向文件夹的链接，未读取（请直接传入该文件夹）"),
    ("folder cannot be listed", "无法列出文件夹内容"),
    ("empty file", "空文件（0 字节）"),
    ("not an image", "不是图片（无法识别的格式）"),
    ("image too large", "图片像素过多"),
    ("cannot open image", "无法打开图片"),
    ("invalid image size", "图片尺寸无效"),
    ("corrupt or truncated image data", "图片数据损坏或不完整（文件可能未传完）"),
    ("duplicate of", "重复文件（与已上传的照片内容相同）"),
    ("file not found", "找不到文件"),
    ("dangling symbolic link", "找不到文件（链接指向的文件不存在）"),
    ("symbolic link loop", "无法读取文件（链接循环）"),
    ("permission denied", "没有读取权限"),
    ("is a directory", "是文件夹，不是图片文件"),
    ("larger than", "文件过大"),
    ("read error", "读取出错"),
    ("cannot open", "无法打开文件"),
    ("not found", "找不到文件"),
    ("cannot be read", "无法读取文件"),
    ("not a regular file", "不是普通文件"),
    ("not a valid zip archive", "不是有效的 zip 压缩包"),
    ("unsafe path in archive", "压缩包中的路径不安全（绝对路径或含 ..），未读取"),
    ("password-protected", "压缩包条目有密码（已加密），无法读取"),
    ("archive entry too large", "压缩包中的文件过大"),
    ("too many entries", "压缩包条目过多，请把照片分成几个较小的压缩包"),
    ("cannot read archive", "无法读取压缩包"),
    ("nested zip archive", "压缩包中的压缩包：请解压后单独上传"),
    ("zip bomb", "压缩包解压后过大，未读取"),
    ("its record has no file path", "旧版本的记录没有文件路径：请重新上传该照片"),
    ("detection failed", "识别失败（内部错误）"),
    ("internal error", "内部错误"),
)


def reason_zh(reason: str | None) -> str | None:
    """The Chinese of a record's `reason` (None when this table knows none of its beginnings)."""
    if not reason:
        return None
    return next((zh for phrase, zh in REASONS_ZH if reason.startswith(phrase)), None)
