"""The gettext catalogs of :mod:`bot.i18n` (``<language>/LC_MESSAGES/<domain>.po``) and :mod:`.extract`,
which finds every message id they must have.

Each language keeps one register and one word per idea, so that a member meets the same term in the command
list, the answers and the posted results (register; image, prompt, server, limit, member, role, own
defaults, job):

- de: du; Bild, Prompt, Server, Limit, Mitglied, Rolle, Standardwerte, Auftrag
- es_ES: tú; imagen, prompt, servidor, límite, miembro, rol, valores predeterminados, tarea
- pt_BR: você; imagem, prompt, servidor, limite, membro, cargo, padrões, tarefa
- ru: вы; изображение, промпт, сервер, лимит, участник, роль, значения по умолчанию, задача
- ja: です・ます; 画像, プロンプト, サーバー, 上限, メンバー, ロール, 既定値, ジョブ
- zh_CN: 你; 图片, 提示词, 服务器, 限额, 成员, 身份组, 默认设置, 任务

A text that names a command uses the command's translated name (de "/bild", ja "/画像生成"), as the member
sees it in their Discord.
"""
